//! A/B slots and boot selection.
//!
//! [`SystemdBoot`] uses systemd-boot's boot counting: an armed slot gets an entry named
//! `passerelle-b+3-0.conf` (3 tries left, 0 done); systemd-boot renames it `+2-1`, `+1-2`, …
//! on each attempt and sorts entries with no tries left after all others, so the previous slot
//! boots again by itself. `loader.conf` says `default passerelle-*`, and among good entries the
//! highest `version` wins, so the newly armed slot is tried first. After a boot whose services
//! report healthy, [`Slots::commit`] drops the counter from the running slot's entry (what
//! systemd-bless-boot does). The ESP is a plain directory, so tests use a temporary one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::UpdateError;
use crate::manifest::Version;

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
    /// The running slot from the kernel command line (`passerelle.slot=a|b`, set by the entry).
    pub fn from_cmdline(cmdline: &str) -> Option<Self> {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("passerelle.slot="))
            .and_then(|s| match s {
                "a" => Some(Self::A),
                "b" => Some(Self::B),
                _ => None,
            })
    }
}

/// A slot whose armed boot ran out of tries: the box came back to the other slot by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub slot: Slot,
    pub version: Option<Version>,
    pub tries_done: u32,
}

/// What the updater needs from the boot loader.
pub trait Slots {
    /// The slot running now.
    fn current(&self) -> Slot;
    /// Block device (or file in tests) of the slot that is not running.
    fn inactive_path(&self) -> &Path;
    /// Boots the inactive slot next, at most `tries` times unless committed.
    fn arm(&self, version: Version, tries: u32) -> Result<(), UpdateError>;
    /// Removes the inactive slot's boot entries: called before its content is replaced, so a
    /// power cut during the copy never leaves an entry pointing at a half-written slot.
    fn retire_inactive(&self) -> Result<(), UpdateError>;
    /// Makes the running slot permanent (called once its services report healthy).
    fn commit(&self) -> Result<(), UpdateError>;
    /// The running slot booted on trial (armed, not committed yet): until it is committed,
    /// the inactive slot is the fallback and must not be written.
    fn on_trial(&self) -> Result<bool, UpdateError>;
    /// Reports (once) that the other slot's armed boot ran out of tries, and clears it.
    fn take_fallback(&self) -> Result<Option<Fallback>, UpdateError>;
}

/// Kernel and boot parameters written into each entry.
#[derive(Debug, Clone)]
pub struct EntryTemplate {
    /// Paths on the ESP, `{slot}` replaced by `a` or `b` (each slot has its own kernel).
    pub linux: String,
    pub initrd: String,
    /// Kernel command line, `{slot}` replaced; must contain `passerelle.slot={slot}`.
    pub options: String,
}

impl EntryTemplate {
    /// The qemu-x86_64 / x86-64 IPC layout (see board/): root slots by GPT partition label.
    pub fn standard() -> Self {
        Self {
            linux: "/passerelle/{slot}/vmlinuz".into(),
            initrd: "/passerelle/{slot}/initrd.img".into(),
            options: "root=PARTLABEL=root-{slot} ro rootfstype=erofs passerelle.slot={slot} \
                      console=ttyS0 quiet systemd.show_status=auto"
                .into(),
        }
    }
}

/// systemd-boot on an ESP mounted (or, in tests, standing) at `esp`.
#[derive(Debug, Clone)]
pub struct SystemdBoot {
    esp: PathBuf,
    current: Slot,
    slot_paths: [PathBuf; 2],
    template: EntryTemplate,
}

impl SystemdBoot {
    /// `slot_paths` are the A and B devices, in that order.
    pub fn new(
        esp: &Path,
        current: Slot,
        slot_paths: [PathBuf; 2],
        template: EntryTemplate,
    ) -> Self {
        Self {
            esp: esp.to_owned(),
            current,
            slot_paths,
            template,
        }
    }

    fn entries(&self) -> PathBuf {
        self.esp.join("loader/entries")
    }

    /// Writes `loader.conf` and a committed entry for `slot` (used when building the image).
    pub fn install(&self, slot: Slot, version: Version) -> Result<(), UpdateError> {
        let loader = self.esp.join("loader");
        std::fs::create_dir_all(self.entries()).map_err(|e| UpdateError::io(&loader, e))?;
        write_synced(
            &loader.join("loader.conf"),
            "default passerelle-*\ntimeout 0\neditor no\nauto-entries no\nauto-firmware no\n",
        )?;
        self.write_entry(slot, version, None)
    }

    fn write_entry(
        &self,
        slot: Slot,
        version: Version,
        tries: Option<u32>,
    ) -> Result<(), UpdateError> {
        let s = slot.name();
        let name = match tries {
            Some(n) => format!("passerelle-{s}+{n}-0.conf"),
            None => format!("passerelle-{s}.conf"),
        };
        let t = &self.template;
        let body = format!(
            "title Passerelle {version} (slot {s})\nsort-key passerelle\nversion {version}\n\
             linux {}\ninitrd {}\noptions {}\n",
            t.linux.replace("{slot}", s),
            t.initrd.replace("{slot}", s),
            t.options.replace("{slot}", s),
        );
        write_synced(&self.entries().join(name), &body)
    }

    /// Entries of `slot`: (file name, tries left and done if counting).
    fn slot_entries(&self, slot: Slot) -> Result<Vec<(String, Counter)>, UpdateError> {
        let dir = self.entries();
        let rd = std::fs::read_dir(&dir).map_err(|e| UpdateError::io(&dir, e))?;
        let prefix = format!("passerelle-{}", slot.name());
        let mut out = Vec::new();
        for entry in rd {
            let name = entry.map_err(|e| UpdateError::io(&dir, e))?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".conf"))
            else {
                continue;
            };
            let counter = if rest.is_empty() {
                None
            } else {
                Some(parse_counter(rest).ok_or_else(|| UpdateError::Boot {
                    path: dir.join(name),
                    reason: "boot counter suffix is not +LEFT[-DONE]".into(),
                })?)
            };
            out.push((name.to_owned(), counter));
        }
        Ok(out)
    }

    fn entry_version(&self, file: &str) -> Option<Version> {
        std::fs::read_to_string(self.entries().join(file))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("version "))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Boot counter of an entry: (tries left, tries done); `None` for a committed entry.
type Counter = Option<(u32, u32)>;

fn parse_counter(rest: &str) -> Option<(u32, u32)> {
    let rest = rest.strip_prefix('+')?;
    match rest.split_once('-') {
        Some((left, done)) => Some((left.parse().ok()?, done.parse().ok()?)),
        None => Some((rest.parse().ok()?, 0)),
    }
}

impl Slots for SystemdBoot {
    fn current(&self) -> Slot {
        self.current
    }

    fn inactive_path(&self) -> &Path {
        match self.current.other() {
            Slot::A => &self.slot_paths[0],
            Slot::B => &self.slot_paths[1],
        }
    }

    fn retire_inactive(&self) -> Result<(), UpdateError> {
        // Every entry of the inactive slot goes, parseable or not (a corrupt one included).
        let dir = self.entries();
        let prefix = format!("passerelle-{}", self.current.other().name());
        let mut removed = false;
        for entry in std::fs::read_dir(&dir).map_err(|e| UpdateError::io(&dir, e))? {
            let name = entry.map_err(|e| UpdateError::io(&dir, e))?.file_name();
            if name.to_str().is_some_and(|n| n.starts_with(&prefix)) {
                let p = dir.join(name);
                std::fs::remove_file(&p).map_err(|e| UpdateError::io(&p, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    fn arm(&self, version: Version, tries: u32) -> Result<(), UpdateError> {
        let slot = self.current.other();
        self.retire_inactive()?;
        self.write_entry(slot, version, Some(tries.max(1)))?;
        tracing::info!(slot = slot.name(), %version, tries, "armed one-shot boot");
        Ok(())
    }

    fn commit(&self) -> Result<(), UpdateError> {
        let dir = self.entries();
        let committed = format!("passerelle-{}.conf", self.current.name());
        for (name, counter) in self.slot_entries(self.current)? {
            if counter.is_some() {
                std::fs::rename(dir.join(&name), dir.join(&committed))
                    .map_err(|e| UpdateError::io(dir.join(&name), e))?;
                sync_dir(&dir)?;
                tracing::info!(slot = self.current.name(), "boot committed");
            }
        }
        Ok(())
    }

    fn on_trial(&self) -> Result<bool, UpdateError> {
        Ok(self
            .slot_entries(self.current)?
            .iter()
            .any(|(_, counter)| counter.is_some()))
    }

    fn take_fallback(&self) -> Result<Option<Fallback>, UpdateError> {
        let other = self.current.other();
        for (name, counter) in self.slot_entries(other)? {
            if let Some((0, done)) = counter {
                let fallback = Fallback {
                    slot: other,
                    version: self.entry_version(&name),
                    tries_done: done,
                };
                let p = self.entries().join(&name);
                std::fs::remove_file(&p).map_err(|e| UpdateError::io(&p, e))?;
                sync_dir(&self.entries())?;
                tracing::warn!(
                    slot = other.name(),
                    tries = done,
                    "armed slot never became healthy: fell back"
                );
                return Ok(Some(fallback));
            }
        }
        Ok(None)
    }
}

/// Writes via a temporary file and rename, fsyncing file and directory: a power cut leaves
/// the old entry or the new one, never half of one (FAT renames are not atomic across a power
/// cut, which is why systemd-boot sorts unparseable entries last too).
fn write_synced(path: &Path, content: &str) -> Result<(), UpdateError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| UpdateError::io(&tmp, e))?;
    f.write_all(content.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| UpdateError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| UpdateError::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| UpdateError::io(dir, e))
}

/// Polls `GET {healthz}` until it answers 200, then commits; gives up at `deadline` without
/// committing (the caller reboots, and the boot counter takes the box back).
pub async fn commit_when_healthy(
    slots: &(dyn Slots + Sync),
    healthz: &hyper::Uri,
    deadline: Duration,
) -> Result<(), UpdateError> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + deadline;
    let mut last = String::from("no answer");
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(2), client.get(healthz.clone())).await {
            Ok(Ok(r)) if r.status() == 200 => return slots.commit(),
            Ok(Ok(r)) => last = format!("HTTP {}", r.status()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(UpdateError::Boot {
        path: PathBuf::from(healthz.to_string()),
        reason: format!("services not healthy within {deadline:?} ({last}): boot not committed"),
    })
}
