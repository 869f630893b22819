//! TM3.2P tests.
