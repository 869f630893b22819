//! Annuaire Santé for the LAN: a local, searchable copy of the MSSanté addresses that keeps
//! working when the national directory is down (EX_2.1.3_5020, RE_2.1_5030).
//!
//! - **Sources** (each optional): the public extraction file ([`extraction`], column layout
//!   documented there), the Annuaire Santé FHIR API ([`fhir`]), and the national LDAP
//!   TM2.1.1A for interactive look-ups only ([`upstream`], EX_2.1.1_5010, RE_2.1_5010/5020).
//! - **Cache** ([`Cache`]): SQLite with an FTS5 trigram index, accent- and case-insensitive,
//!   replaced atomically; the source values are indexed, never altered (RE_2.1_5030).
//! - **LAN**: a read-only LDAP server ([`ldap_server`]) for mail clients and LPS address
//!   books, and a JSON search API ([`api`]).

pub mod api;
pub mod cache;
pub mod config;
pub mod entry;
mod error;
pub mod extraction;
pub mod fhir;
mod http;
pub mod ldap_server;
pub mod query;
pub mod refresh;
pub mod upstream;

pub use cache::{Cache, CacheStatus, Found, LoadInfo};
pub use config::{AnnuaireConfig, LdapServerConfig, UpstreamAttributes, UpstreamLdap};
pub use entry::{Entry, Field};
pub use error::{AnnuaireError, Result};
pub use query::{Attr, Pattern, Query, QueryLimits};
pub use refresh::{RefreshReport, refresh, refresh_loop};
