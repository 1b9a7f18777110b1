//! Sends one large file message through a running server and pulls it back, streaming both
//! ways, and compares the throughput with a raw loopback copy of the same bytes measured in
//! the same run. With `--server-pid`, reports the server's peak resident memory during each
//! transfer (the peak is reset before each through `/proc/PID/clear_refs`). A durable upload
//! also waits for the disk, so the same bytes are also written to a file in `--disk-dir`
//! (the server's filesystem) and flushed with fdatasync: the disk's own floor.
//!
//!     cargo run --release --example large_file -- --addr 127.0.0.1:1357 --server-pid PID
//!
//! The content is generated and checked chunk by chunk, so this tool's own memory stays small
//! whatever the size.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use messageu_protocol::client::{
    bare_request, check_reply_code, parse_registered, parse_sent, register_request,
    send_request_head, PULLED_HEADER_LEN,
};
use messageu_protocol::{ClientId, Edition, Operation, PublicKey, ReplyHeader, REPLY_HEADER_LEN};

const CHUNK: usize = 256 << 10;
/// Every this many bytes, the content carries its own offset.
const STAMP_EVERY: usize = 4096;
const FILE: u8 = 4;

#[derive(Parser)]
struct Cli {
    /// The server to measure.
    #[arg(long)]
    addr: SocketAddr,
    /// Content size in bytes (at most 4 GiB − 26).
    #[arg(long, default_value_t = 1 << 30)]
    size: u32,
    /// The server's process id, to report its peak resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A folder on the server's filesystem, for the disk floor.
    #[arg(long, default_value = ".")]
    disk_dir: std::path::PathBuf,
    /// Only the transfer through the server, no floors: for running beside other load.
    #[arg(long)]
    no_floor: bool,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let size = u64::from(cli.size);
    let floors = if cli.no_floor {
        None
    } else {
        Some(Floors {
            raw_up: raw_copy(size, Direction::ToServer)?,
            raw_down: raw_copy(size, Direction::FromServer)?,
            disk: disk_write(size, &cli.disk_dir)?,
        })
    };

    let edition = Edition::Y2024;
    let mut stream = connect(cli.addr)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let sender = register(&mut stream, edition, &format!("large-sender-{stamp}"))?;
    let receiver = register(&mut stream, edition, &format!("large-receiver-{stamp}"))?;

    reset_peak(cli.server_pid);
    let start = Instant::now();
    stream.write_all(&send_request_head(
        edition, sender, receiver, FILE, cli.size,
    ))?;
    write_pattern(&mut stream, size)?;
    let payload = read_reply(&mut stream, edition, Operation::SendMessage)?;
    parse_sent(&payload)?;
    let upload = start.elapsed();
    let upload_peak = peak_rss(cli.server_pid);

    reset_peak(cli.server_pid);
    let start = Instant::now();
    stream.write_all(&bare_request(edition, Operation::PullMessages, receiver))?;
    let mut header = [0; REPLY_HEADER_LEN];
    stream.read_exact(&mut header)?;
    let header = ReplyHeader::parse(&header);
    check_reply_code(edition, Operation::PullMessages, &header)?;
    let mut message_header = [0; PULLED_HEADER_LEN];
    stream.read_exact(&mut message_header)?;
    let content_len = u32::from_le_bytes(message_header[21..25].try_into()?);
    if message_header[..16] != sender.0 || u64::from(content_len) != size {
        return Err("the pulled message is not the one sent".into());
    }
    check_pattern(&mut stream, size)?;
    let download = start.elapsed();
    let download_peak = peak_rss(cli.server_pid);

    let mib = size as f64 / f64::from(1 << 20);
    let rate = |elapsed: Duration| mib / elapsed.as_secs_f64();
    println!(
        "| {mib:.0} MiB | MiB/s | raw loopback MiB/s | ratio | disk write + fdatasync MiB/s | server peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    let megabytes = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for (name, elapsed, peak, raw) in [
        (
            "send",
            upload,
            upload_peak,
            floors.as_ref().map(|f| f.raw_up),
        ),
        (
            "pull",
            download,
            download_peak,
            floors.as_ref().map(|f| f.raw_down),
        ),
    ] {
        let na = || "n/a".to_owned();
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} |",
            rate(elapsed),
            raw.map_or_else(na, |raw| format!("{:.0}", rate(raw))),
            raw.map_or_else(na, |raw| format!(
                "{:.2}",
                raw.as_secs_f64() / elapsed.as_secs_f64()
            )),
            floors
                .as_ref()
                .map_or_else(na, |f| format!("{:.0}", rate(f.disk))),
            peak.map_or_else(na, megabytes),
        );
    }
    Ok(())
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn register(stream: &mut TcpStream, edition: Edition, name: &str) -> Result<ClientId> {
    stream.write_all(&register_request(edition, name, &PublicKey([1; 160])))?;
    let payload = read_reply(stream, edition, Operation::Register)?;
    Ok(parse_registered(&payload)?)
}

fn read_reply(stream: &mut TcpStream, edition: Edition, operation: Operation) -> Result<Vec<u8>> {
    let mut header = [0; REPLY_HEADER_LEN];
    stream.read_exact(&mut header)?;
    let header = ReplyHeader::parse(&header);
    check_reply_code(edition, operation, &header)?;
    let mut payload = vec![0; header.payload_size as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

/// The content byte at every offset: cheap to make and to check, and a shifted or reordered
/// chunk never matches.
fn fill_pattern(offset: u64, chunk: &mut [u8]) {
    // Copying a fixed block and stamping each 4 KiB with its offset keeps this tool's CPU
    // low (it shares the machine with the server) while any shifted or swapped block still
    // differs.
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        (0..CHUNK as u64)
            .map(|at| (at ^ (at >> 11) ^ (at >> 5).wrapping_mul(31)) as u8)
            .collect()
    });
    let start = (offset % CHUNK as u64) as usize;
    for (index, piece) in chunk.chunks_mut(STAMP_EVERY).enumerate() {
        let at = start + index * STAMP_EVERY;
        let source = &block[at % CHUNK..];
        let len = piece.len().min(source.len());
        piece[..len].copy_from_slice(&source[..len]);
        let stamp = (offset + (index * STAMP_EVERY) as u64).to_le_bytes();
        let stamped = piece.len().min(stamp.len());
        piece[..stamped].copy_from_slice(&stamp[..stamped]);
    }
}

fn write_pattern(stream: &mut impl Write, size: u64) -> io::Result<()> {
    let mut chunk = vec![0; CHUNK];
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(CHUNK as u64) as usize;
        fill_pattern(offset, &mut chunk[..len]);
        stream.write_all(&chunk[..len])?;
        offset += len as u64;
    }
    Ok(())
}

fn check_pattern(stream: &mut impl Read, size: u64) -> Result<()> {
    let (mut got, mut want) = (vec![0; CHUNK], vec![0; CHUNK]);
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(CHUNK as u64) as usize;
        stream.read_exact(&mut got[..len])?;
        fill_pattern(offset, &mut want[..len]);
        if got[..len] != want[..len] {
            return Err(format!("content differs in the chunk at offset {offset}").into());
        }
        offset += len as u64;
    }
    Ok(())
}

/// The same bytes without the server: over loopback each way, and to the disk.
struct Floors {
    raw_up: Duration,
    raw_down: Duration,
    disk: Duration,
}

#[derive(Clone, Copy)]
enum Direction {
    ToServer,
    FromServer,
}

/// The floor: the same bytes over a loopback connection to a peer that only reads (or only
/// writes), with the same generation and checking work on this side.
fn raw_copy(size: u64, direction: Direction) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let peer = thread::spawn(move || -> io::Result<()> {
        let (mut socket, _) = listener.accept()?;
        match direction {
            Direction::ToServer => io::copy(&mut socket, &mut io::sink()).map(drop),
            Direction::FromServer => write_pattern(&mut socket, size),
        }
    });
    let mut stream = connect(addr)?;
    let start = Instant::now();
    match direction {
        Direction::ToServer => {
            write_pattern(&mut stream, size)?;
            stream.shutdown(std::net::Shutdown::Write)?;
            peer.join().map_err(|_| "raw copy peer panicked")??;
        }
        Direction::FromServer => {
            check_pattern(&mut stream, size)?;
            peer.join().map_err(|_| "raw copy peer panicked")??;
        }
    }
    Ok(start.elapsed())
}

/// The disk's floor: the same bytes written to a file and flushed.
fn disk_write(size: u64, dir: &std::path::Path) -> Result<Duration> {
    let path = dir.join(format!(".large-file-floor-{}", std::process::id()));
    let start = Instant::now();
    let result = fs::File::create(&path).and_then(|mut file| {
        write_pattern(&mut file, size)?;
        file.sync_data()
    });
    let elapsed = start.elapsed();
    fs::remove_file(&path)?;
    result?;
    Ok(elapsed)
}

/// Resets the process's peak resident memory (VmHWM) to its current size.
fn reset_peak(pid: Option<u32>) {
    if let Some(pid) = pid {
        if let Err(error) = fs::write(format!("/proc/{pid}/clear_refs"), "5") {
            eprintln!("cannot reset the peak memory of {pid}: {error}");
        }
    }
}

/// The process's peak resident memory in KiB, from `/proc/PID/status`.
fn peak_rss(pid: Option<u32>) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
