//! passerelle-config
