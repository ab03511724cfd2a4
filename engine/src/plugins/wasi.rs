//! The WASI 0.2 a plugin sees: present, so that components built the default
//! way by componentize-py and componentize-js load, but granting nothing and
//! deterministic, so that a decision still depends only on (transfer,
//! context, config), whatever language the plugin is written in.
//!
//! | interface | what a plugin gets |
//! |---|---|
//! | `wasi:filesystem` | no preopened directory, so nothing to open |
//! | `wasi:sockets` (TCP, UDP, name lookup) | refused: `access-denied` |
//! | `wasi:cli` environment, arguments, initial directory | empty |
//! | `wasi:cli` stdin | empty |
//! | `wasi:cli` stdout, stderr | captured, at most `OUTPUT_BYTES_PER_CALL_MAX` a call, then written to the engine's log line by line under the plugin's name, with the same bounds as `host.log` |
//! | `wasi:cli/exit` | ends the call as a fault (`trap`) |
//! | `wasi:clocks/wall-clock` | the transfer's time reference, fixed for the call |
//! | `wasi:clocks/monotonic-clock` | starts at 0 and moves only by what the plugin sleeps; a sleep returns at once |
//! | `wasi:random` (all three) | a stream seeded from the transfer id: the same transfer gets the same bytes |
//!
//! The context is built on the first WASI call a plugin makes, so a plugin
//! that imports none (every Rust example) pays nothing for it.
//!
//! Plugin calls run on threads that may block (a blocking pool, a scoped
//! thread, or an async worker inside `block_in_place`): wasmtime-wasi's
//! synchronous bindings enter the Tokio runtime for stream and poll calls.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rand_wasi::SeedableRng as _;
use sha2::{Digest, Sha256};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView};

use super::sandbox::HostState;

/// Bytes of stdout plus stderr one call may write; the rest is dropped (and
/// counted in the last line logged). The log's own bounds apply on top.
pub const OUTPUT_BYTES_PER_CALL_MAX: usize = 4 << 10;
/// Most random bytes one `get-random-bytes` call may ask for (wasmtime-wasi
/// traps above it): a plugin asking for more is broken, not unlucky.
const RANDOM_BYTES_PER_CALL_MAX: u64 = 64 << 10;
/// The WASI version whose interfaces wasmtime-wasi registers; a component
/// importing any 0.2.x is linked to them.
const WASI_VERSION: &str = "0.2.12";

/// What a call's deterministic WASI derives from: the transfer it decides.
#[derive(Clone, Copy, Debug)]
pub struct CallStamp<'a> {
    pub transfer_id: &'a str,
    /// The transfer's time reference, in milliseconds since the Unix epoch.
    pub time_reference_ms: i64,
}

impl CallStamp<'static> {
    /// The stamp of calls that decide no transfer: the upload check and the
    /// `configure` that reads what a validator needs.
    pub const NO_TRANSFER: Self = Self { transfer_id: "", time_reference_ms: 0 };
}

/// One store's WASI: built on first use.
pub struct WasiState {
    seed: [u8; 32],
    time_reference_ms: i64,
    ctx: Option<WasiCtx>,
    table: ResourceTable,
    /// The monotonic clock, in nanoseconds: what the plugin has slept.
    slept_ns: Arc<AtomicU64>,
    output: Arc<Mutex<Captured>>,
}

impl WasiState {
    pub fn new(stamp: CallStamp<'_>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"transfer-engine plugin wasi random v1\0");
        hasher.update(stamp.transfer_id.as_bytes());
        Self {
            seed: hasher.finalize().into(),
            time_reference_ms: stamp.time_reference_ms,
            ctx: None,
            table: ResourceTable::new(),
            slept_ns: Arc::default(),
            output: Arc::default(),
        }
    }

    fn view(&mut self) -> WasiCtxView<'_> {
        let ctx = self.ctx.get_or_insert_with(|| {
            let insecure_seed = u128::from_le_bytes(self.seed[..16].try_into().expect("16 of 32 bytes"));
            let mut insecure_rng_seed = self.seed;
            insecure_rng_seed[0] ^= 0xff;
            WasiCtxBuilder::new()
                .wall_clock(FixedWallClock(Duration::from_millis(u64::try_from(self.time_reference_ms).unwrap_or(0))))
                .monotonic_clock(VirtualClock(self.slept_ns.clone()))
                .secure_random(rand_wasi::rngs::StdRng::from_seed(self.seed))
                .insecure_random(rand_wasi::rngs::StdRng::from_seed(insecure_rng_seed))
                .insecure_random_seed(insecure_seed)
                .max_random_size(RANDOM_BYTES_PER_CALL_MAX)
                .stdout(Capture { output: self.output.clone(), stream: Stream::Stdout })
                .stderr(Capture { output: self.output.clone(), stream: Stream::Stderr })
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build()
        });
        WasiCtxView { ctx, table: &mut self.table }
    }

    /// What the plugin wrote to stdout and stderr since the last take, as
    /// whole lines (a last unterminated line included), and how many bytes
    /// were dropped over the bound.
    pub fn take_output(&mut self) -> Option<(Vec<(Stream, String)>, usize)> {
        self.ctx.as_ref()?;
        let mut captured = self.output.lock().expect("not poisoned");
        if captured.bytes == 0 && captured.dropped_bytes == 0 {
            return None;
        }
        let lines = std::mem::take(&mut captured.lines)
            .into_iter()
            .chain([(Stream::Stdout, std::mem::take(&mut captured.stdout)), (Stream::Stderr, std::mem::take(&mut captured.stderr))])
            .filter(|(_, line)| !line.is_empty())
            .map(|(stream, line)| (stream, String::from_utf8_lossy(&line).into_owned()))
            .collect();
        let dropped = std::mem::take(&mut captured.dropped_bytes);
        captured.bytes = 0;
        Some((lines, dropped))
    }
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}

/// Links WASI 0.2 into `linker`, with sleeping replaced by virtual time.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // wasmtime-wasi sleeps for real (and forever for a far deadline), which
    // would stall the processor's thread: fuel does not run while the host
    // waits. Here a sleep advances the plugin's monotonic clock and returns.
    linker.allow_shadowing(true);
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI_VERSION}"))?;
    clock.func_wrap("subscribe-duration", |mut store: StoreContextMut<'_, HostState>, (ns,): (u64,)| {
        let wasi = &mut store.data_mut().wasi;
        let slept = &wasi.slept_ns;
        let _ = slept.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| Some(now.saturating_add(ns)));
        Ok((ready(&mut wasi.table)?,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, HostState>, (when,): (u64,)| {
        let wasi = &mut store.data_mut().wasi;
        wasi.slept_ns.fetch_max(when, Ordering::Relaxed);
        Ok((ready(&mut wasi.table)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

fn ready(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let ready = table.push(Ready)?;
    wasmtime_wasi::p2::subscribe(table, ready)
}

/// A pollable that is always ready: a sleep that has already happened.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

struct FixedWallClock(Duration);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

struct VirtualClock(Arc<AtomicU64>);

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// stdout and stderr of one call, split into lines as they arrive.
#[derive(Default)]
struct Captured {
    lines: Vec<(Stream, Vec<u8>)>,
    /// The unterminated tail of each stream.
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    bytes: usize,
    dropped_bytes: usize,
}

impl Captured {
    fn write(&mut self, stream: Stream, mut bytes: &[u8]) {
        let room = OUTPUT_BYTES_PER_CALL_MAX - self.bytes;
        if bytes.len() > room {
            self.dropped_bytes += bytes.len() - room;
            bytes = &bytes[..room];
        }
        self.bytes += bytes.len();
        let tail = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            tail.extend_from_slice(piece.strip_suffix(b"\n").unwrap_or(piece));
            if piece.ends_with(b"\n") {
                self.lines.push((stream, std::mem::take(tail)));
            }
        }
    }
}

#[derive(Clone)]
struct Capture {
    output: Arc<Mutex<Captured>>,
    stream: Stream,
}

impl Capture {
    fn write(&self, bytes: &[u8]) {
        self.output.lock().expect("not poisoned").write(self.stream, bytes);
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        Capture::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    /// Always room: what is over the bound is dropped, never refused, so a
    /// chatty plugin is never stopped (nor faulted) for writing.
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(OUTPUT_BYTES_PER_CALL_MAX)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_split_into_lines_and_bounded_per_call() {
        let mut captured = Captured::default();
        captured.write(Stream::Stdout, b"one\ntw");
        captured.write(Stream::Stderr, b"err\n");
        captured.write(Stream::Stdout, b"o\n");
        let lines: Vec<_> = captured.lines.iter().map(|(s, l)| (*s, String::from_utf8_lossy(l).into_owned())).collect();
        assert_eq!(lines, [(Stream::Stdout, "one".into()), (Stream::Stderr, "err".into()), (Stream::Stdout, "two".into())]);
        captured.write(Stream::Stdout, &vec![b'x'; 2 * OUTPUT_BYTES_PER_CALL_MAX]);
        assert_eq!(captured.bytes, OUTPUT_BYTES_PER_CALL_MAX);
        assert_eq!(captured.dropped_bytes, 2 * OUTPUT_BYTES_PER_CALL_MAX - (OUTPUT_BYTES_PER_CALL_MAX - 12));
    }

    #[test]
    fn the_random_seed_depends_on_the_transfer_id_only() {
        let a = WasiState::new(CallStamp { transfer_id: "a", time_reference_ms: 1 });
        let a_later = WasiState::new(CallStamp { transfer_id: "a", time_reference_ms: 2 });
        let b = WasiState::new(CallStamp { transfer_id: "b", time_reference_ms: 1 });
        assert_eq!(a.seed, a_later.seed);
        assert_ne!(a.seed, b.seed);
    }
}
