//! passerelle-harness
