//! passerelle-testpki
