//! passerelle-queue
