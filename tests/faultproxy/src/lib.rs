//! passerelle-faultproxy
