//! Compiled components kept on disk (`plugin_compiled_dir`), so that an
//! engine that restarts, or another process on the machine, loads in
//! milliseconds what took seconds to compile (a Python or JavaScript
//! component is 10 to 20 MB of WebAssembly).
//!
//! Loading compiled code from a file is only as safe as the file: wasmtime
//! runs it as it is (`Component::deserialize` is `unsafe`). So the directory
//! must be writable by the engine's user alone (one that its group or others
//! may write is refused), each file ends with the sha256 of what precedes it
//! (a torn or corrupted file is compiled again, never run), and files are
//! written whole under another name, then renamed. A file wasmtime made for
//! another version or configuration of itself is refused by wasmtime and
//! replaced. Wasmtime's own `cache` feature does the same with a
//! configuration file and zstd; this is the part we need, in a page.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;

/// Bytes of the checksum at the end of each file.
const CHECKSUM_BYTES: usize = 32;
/// Files kept; past this, the least recently used are deleted. A Python
/// component compiles to about 60 MB, so this bounds the directory to a few GB.
pub const FILES_MAX: usize = 32;

/// A directory of compiled components, each named by the sha256 of the
/// component's bytes and the engine's compatibility hash.
#[derive(Debug)]
pub struct PrecompiledDir {
    dir: PathBuf,
}

impl PrecompiledDir {
    /// Creates the directory (mode 0700) if missing; refuses one that anyone
    /// but its owner may write, since its files are run as code.
    pub fn open(dir: &Path) -> Result<Self, PluginError> {
        let unusable = |why: String| PluginError::Sandbox(format!("plugin_compiled_dir {}: {why}", dir.display()));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| unusable(e.to_string()))?;
        let mode = std::fs::metadata(dir).map_err(|e| unusable(e.to_string()))?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(unusable(format!(
                "its group or others may write it (mode {:o}): compiled plugins are run from it, so only the engine's user may write it",
                mode & 0o777
            )));
        }
        Ok(Self { dir: dir.to_owned() })
    }

    fn path(&self, engine: &Engine, sha256: &[u8; 32]) -> PathBuf {
        // Any hasher will do: wasmtime checks compatibility again on load; the
        // name only keeps files of different engines apart.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{}-{:016x}.cwasm", hex::encode(sha256), hasher.finish()))
    }

    /// The component compiled from bytes with this sha256, if a sound file holds it.
    pub fn load(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Component> {
        let path = self.path(engine, sha256);
        let file = std::fs::read(&path).ok()?;
        let (code, checksum) = file.split_at(file.len().checked_sub(CHECKSUM_BYTES)?);
        if Sha256::digest(code).as_slice() != checksum {
            warn!(path = %path.display(), "A compiled plugin file does not match its checksum; compiling the plugin again.");
            return None;
        }
        // SAFETY: `code` is what `Component::serialize` wrote for these bytes
        // (its checksum matches), in a directory only the engine's user can
        // write; wasmtime refuses code made by another version or configuration.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => {
                // Its time of last use, for the pruning in `store`.
                let _ = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(component)
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "A compiled plugin file is not usable by this engine; compiling again.");
                None
            }
        }
    }

    /// Keeps a compiled component for the next load; a failure only costs a
    /// compile later, so it is logged, not returned.
    pub fn store(&self, engine: &Engine, sha256: &[u8; 32], component: &Component) {
        let path = self.path(engine, sha256);
        if let Err(e) = Self::write(&path, component) {
            warn!(path = %path.display(), error = %e, "Could not keep a compiled plugin on disk; it is compiled again at the next start.");
        }
        if let Err(e) = self.prune(FILES_MAX) {
            warn!(dir = %self.dir.display(), error = %e, "Could not delete old compiled plugins.");
        }
    }

    /// Deletes the least recently used files past `files_max`.
    fn prune(&self, files_max: usize) -> std::io::Result<()> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.path().extension().is_some_and(|e| e == "cwasm") {
                files.push((entry.metadata()?.modified()?, entry.path()));
            }
        }
        if files.len() > files_max {
            files.sort_unstable();
            for (_, path) in &files[..files.len() - files_max] {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    fn write(path: &Path, component: &Component) -> anyhow::Result<()> {
        let code = component.serialize()?;
        let partial = path.with_extension(format!("{}.partial", uuid::Uuid::new_v4().simple()));
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(&code)?;
            file.write_all(&Sha256::digest(&code))?;
            file.sync_all()
        })()
        .and_then(|()| std::fs::rename(&partial, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        Ok(written?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the magic, version 0x0d, layer 1.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("precompiled-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn a_stored_component_loads_back_and_a_corrupted_file_is_never_run() {
        let (engine, dir) = (Engine::default(), scratch());
        let cache = PrecompiledDir::open(&dir).unwrap();
        let key = [7; 32];
        assert!(cache.load(&engine, &key).is_none(), "nothing stored yet");
        cache.store(&engine, &key, &Component::new(&engine, EMPTY_COMPONENT).unwrap());
        assert!(cache.load(&engine, &key).is_some());

        let path = cache.path(&engine, &key);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.load(&engine, &key).is_none(), "a flipped bit fails the checksum");
        std::fs::write(&path, &bytes[..CHECKSUM_BYTES - 1]).unwrap();
        assert!(cache.load(&engine, &key).is_none(), "a file shorter than a checksum");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn past_its_file_limit_the_least_recently_used_files_are_deleted() {
        let (engine, dir) = (Engine::default(), scratch());
        let cache = PrecompiledDir::open(&dir).unwrap();
        let component = Component::new(&engine, EMPTY_COMPONENT).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for n in 0..3u8 {
            cache.store(&engine, &[n; 32], &component);
            std::fs::File::options().write(true).open(cache.path(&engine, &[n; 32])).unwrap().set_modified(old).unwrap();
        }
        assert!(cache.load(&engine, &[0; 32]).is_some(), "used now: the most recent");
        cache.prune(2).unwrap();
        assert!(cache.path(&engine, &[0; 32]).exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = scratch();
        let created = PrecompiledDir::open(&dir).unwrap();
        assert_eq!(std::fs::metadata(&created.dir).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = PrecompiledDir::open(&dir).unwrap_err().to_string();
        assert!(refused.contains("only the engine's user may write it"), "{refused}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
