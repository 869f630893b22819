//! Signed A/B firmware updates (issue 9).
//!
//! - [`vendor`]: development keys, root of trust and its rotation, publishing an image as a TUF
//!   repository with tough's editor.
//! - [`device`]: [`device::check_and_download`] verifies the vendor repository against the
//!   `root.json` shipped in the image (expiry, rollback via a persistent datastore, size limits
//!   on every metadata file, signatures) and streams the newest image for this board into the
//!   inactive slot through [`slot::SlotWriter`] (hash while writing, fsync, read-back).
//! - [`boot`]: the A/B [`boot::Slots`] abstraction, systemd-boot boot counting, commit after
//!   `/healthz`.
//! - [`service`]: the daemon loop ([`service::serve`], [`service::UpdaterConfig`]) polling with
//!   jitter, arming, reporting [`service::UpdateStatus`] to the web admin.
//! - [`transport`]: tough's `Transport` over HTTP/1.1 with timeouts.
//!
//! Expiry is checked against the system clock (tough has no injectable clock): tests make
//! expired metadata rather than moving time.

pub mod boot;
pub mod device;
pub mod error;
pub mod manifest;
pub mod service;
pub mod slot;
pub mod token;
pub mod transport;
pub mod vendor;

pub use device::{
    CheckOutcome, DeviceUpdateConfig, MetadataLimits, check, check_and_download, check_and_install,
};
pub use error::UpdateError;
pub use manifest::{ImageInfo, Version};
