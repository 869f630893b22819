//! The local web admin (issue #8): HTTPS with the device key held in the token, first-run
//! setup, sessions, CSRF, login lockout, audit log, and the server-rendered pages.
//!
//! - Every route is in [`ROUTES`] with its [`Access`] class; the router is built from it.
//! - Before setup every authenticated route redirects to `/setup`; after, `/setup` redirects to
//!   `/login` and every authenticated route answers 302 → `/login` (GET) or 401 (other methods)
//!   without a session.
//! - Every POST carries a CSRF token (the session's; before login, a double-submit cookie),
//!   compared in constant time; a missing or wrong token is 403 and an audit line.
//! - Pages are maud templates (escaped by construction); CSS and the SSE script are embedded;
//!   the CSP allows nothing inline and nothing from elsewhere.

mod app;
mod assets;
mod auth;
mod billing;
mod certs;
mod charts;
mod config;
mod db;
mod error;
mod i18n;
mod mail;
mod pages;
mod server;
mod services;
mod updates;

pub use app::{Access, CSP, MAX_CERT_UPLOAD_BYTES, ROUTES, RouteSpec};
pub use config::{LockoutPolicy, WebadminConfig};
pub use error::{Result, WebadminError};
pub use server::{Webadmin, device_certificate, serve};
pub use services::{AdminServices, AnchorFiles, QueueMetricsSource};
