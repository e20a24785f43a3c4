//! `loadgen`: a small HTTP/1.1 load generator for `make bench` and `make soak` (std only).
//!
//! Usage:
//! `loadgen --addr 127.0.0.1:PORT --spec FILE [--spec FILE ...] [--connections N]
//!  [--requests N] [--duration S] [--timeout S]`
//!
//! A spec file is a raw HTTP request template: the request line (`POST /path`), header
//! lines, an empty line, then the body. `Host` and `Content-Length` are added. A header
//! `x-loadgen-expect: TEXT` is not sent: a response whose body lacks TEXT counts as bad.
//! With several specs, requests take them in turn.
//!
//! Each connection is one thread with one keep-alive connection (reopened after a close or
//! an error). The run stops after `--requests` requests or `--duration` seconds, whichever
//! comes first. It prints one JSON object: totals, status counts, and per spec the latency
//! (request written → last body byte) and time to first body byte, p50/p90/p99/max in ms.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: loadgen --addr HOST:PORT --spec FILE [--spec FILE ...] [--connections N] [--requests N] [--duration SECONDS] [--timeout SECONDS]";

/// One request template.
struct Spec {
    name: String,
    /// The request bytes, ready to write.
    wire: Vec<u8>,
    expect: Option<Vec<u8>>,
}

struct Args {
    addr: String,
    specs: Vec<Spec>,
    connections: usize,
    requests: u64,
    duration: Duration,
    timeout: Duration,
}

/// One completed (or failed) request.
struct Sample {
    spec: usize,
    /// 0 when the connection failed before a status line.
    status: u16,
    ok_body: bool,
    latency_us: u64,
    ttfb_us: u64,
    bytes: u64,
}

fn parse_spec(path: &str, host: &str) -> Result<Spec, String> {
    let raw = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let split = find(&raw, b"\n\n")
        .map(|i| (i, 2))
        .or_else(|| find(&raw, b"\r\n\r\n").map(|i| (i, 4)));
    let (head, body) = match split {
        Some((i, n)) => (&raw[..i], &raw[i + n..]),
        None => (&raw[..], &[][..]),
    };
    let head = std::str::from_utf8(head).map_err(|_| format!("{path}: head is not UTF-8"))?;
    let mut lines = head.lines().map(str::trim_end).filter(|l| !l.is_empty());
    let request_line = lines.next().ok_or(format!("{path}: empty spec"))?;
    let mut wire = format!("{request_line} HTTP/1.1\r\nhost: {host}\r\n");
    let mut expect = None;
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or(format!("{path}: bad header line {line:?}"))?;
        if k.trim().eq_ignore_ascii_case("x-loadgen-expect") {
            expect = Some(v.trim().as_bytes().to_vec());
            continue;
        }
        wire.push_str(&format!("{}: {}\r\n", k.trim(), v.trim()));
    }
    if !body.is_empty() || request_line.starts_with("POST") {
        wire.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    wire.push_str("\r\n");
    let mut wire = wire.into_bytes();
    wire.extend_from_slice(body);
    let name = std::path::Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string());
    Ok(Spec { name, wire, expect })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut addr = None;
    let mut spec_paths = Vec::new();
    let mut connections = 8usize;
    let mut requests = 10_000u64;
    let mut duration = 10.0f64;
    let mut timeout = 30.0f64;
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: &String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--addr" => addr = Some(value()?.clone()),
            "--spec" => spec_paths.push(value()?.clone()),
            "--connections" => connections = num(value()?)?.max(1.0) as usize,
            "--requests" => requests = num(value()?)?.max(0.0) as u64,
            "--duration" => duration = num(value()?)?.max(0.001),
            "--timeout" => timeout = num(value()?)?.max(0.001),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let addr = addr.ok_or(format!("--addr is required\n{USAGE}"))?;
    if spec_paths.is_empty() {
        return Err(format!("--spec is required\n{USAGE}"));
    }
    let specs = spec_paths
        .iter()
        .map(|p| parse_spec(p, &addr))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Args {
        addr,
        specs,
        connections: connections.min(1024),
        requests,
        duration: Duration::from_secs_f64(duration),
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// The parts of a response the client needs.
struct Response {
    status: u16,
    close: bool,
    ttfb: Instant,
    bytes: u64,
    found: bool,
}

fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    let n = r.read_until(b'\n', line)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(())
}

/// Reads body bytes, searching for `expect` across chunk boundaries.
struct BodySink<'a> {
    expect: Option<&'a [u8]>,
    tail: Vec<u8>,
    found: bool,
    bytes: u64,
    first: Option<Instant>,
}

impl BodySink<'_> {
    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.first.get_or_insert_with(Instant::now);
        self.bytes += data.len() as u64;
        if let (Some(e), false) = (self.expect, self.found) {
            self.tail.extend_from_slice(data);
            if find(&self.tail, e).is_some() {
                self.found = true;
                self.tail.clear();
            } else if self.tail.len() > e.len() {
                let cut = self.tail.len() - e.len();
                self.tail.drain(..cut);
            }
        }
    }
}

fn read_response(
    r: &mut BufReader<TcpStream>,
    expect: Option<&[u8]>,
    line: &mut Vec<u8>,
    buf: &mut [u8],
) -> io::Result<Response> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let (status, close, length, chunked, head_done) = loop {
        read_line(r, line)?;
        let text = String::from_utf8_lossy(line).into_owned();
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut close = text.starts_with("HTTP/1.0");
        let mut length = None;
        let mut chunked = false;
        loop {
            read_line(r, line)?;
            if line.is_empty() {
                break;
            }
            let h = String::from_utf8_lossy(line).to_ascii_lowercase();
            if let Some((k, v)) = h.split_once(':') {
                let v = v.trim();
                match k.trim() {
                    "content-length" => length = v.parse::<u64>().ok(),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        break (status, close, length, chunked, Instant::now());
    };
    let mut sink = BodySink {
        expect,
        tail: Vec::new(),
        found: expect.is_none(),
        bytes: 0,
        first: None,
    };
    if chunked {
        loop {
            read_line(r, line)?;
            let size_text = String::from_utf8_lossy(line);
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let mut left =
                u64::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size line"))?;
            if left == 0 {
                // Trailers until the empty line.
                loop {
                    read_line(r, line)?;
                    if line.is_empty() {
                        break;
                    }
                }
                break;
            }
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                sink.push(&buf[..n]);
                left -= n as u64;
            }
            read_line(r, line)?;
        }
    } else if let Some(mut left) = length {
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = r.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            sink.push(&buf[..n]);
            left -= n as u64;
        }
    } else {
        loop {
            let n = r.read(buf)?;
            if n == 0 {
                break;
            }
            sink.push(&buf[..n]);
        }
        return Ok(Response {
            status,
            close: true,
            ttfb: sink.first.unwrap_or(head_done),
            bytes: sink.bytes,
            found: sink.found,
        });
    }
    Ok(Response {
        status,
        close,
        ttfb: sink.first.unwrap_or(head_done),
        bytes: sink.bytes,
        found: sink.found,
    })
}

fn connect(addr: &str, timeout: Duration) -> io::Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let r = BufReader::with_capacity(64 * 1024, s.try_clone()?);
    Ok((s, r))
}

fn worker(args: &Args, next: &AtomicU64, deadline: Instant) -> (Vec<Sample>, u64) {
    let mut samples = Vec::new();
    let mut conn_errors = 0u64;
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut line = Vec::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= args.requests {
            break;
        }
        let spec_i = (n % args.specs.len() as u64) as usize;
        let Some(spec) = args.specs.get(spec_i) else {
            break;
        };
        if conn.is_none() {
            match connect(&args.addr, args.timeout) {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    conn_errors += 1;
                    samples.push(Sample {
                        spec: spec_i,
                        status: 0,
                        ok_body: false,
                        latency_us: 0,
                        ttfb_us: 0,
                        bytes: 0,
                    });
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let Some((w, r)) = conn.as_mut() else {
            continue;
        };
        let start = Instant::now();
        let result = w
            .write_all(&spec.wire)
            .and_then(|()| read_response(r, spec.expect.as_deref(), &mut line, &mut buf));
        let end = Instant::now();
        match result {
            Ok(resp) => {
                samples.push(Sample {
                    spec: spec_i,
                    status: resp.status,
                    ok_body: resp.found,
                    latency_us: (end - start).as_micros() as u64,
                    ttfb_us: (resp.ttfb.max(start) - start).as_micros() as u64,
                    bytes: resp.bytes,
                });
                if resp.close {
                    conn = None;
                }
            }
            Err(_) => {
                conn_errors += 1;
                samples.push(Sample {
                    spec: spec_i,
                    status: 0,
                    ok_body: false,
                    latency_us: (end - start).as_micros() as u64,
                    ttfb_us: 0,
                    bytes: 0,
                });
                conn = None;
            }
        }
    }
    (samples, conn_errors)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied().unwrap_or(0) as f64 / 1000.0
}

fn dist_json(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    format!(
        "{{\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        percentile(&v, 99.0),
        percentile(&v, 100.0)
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn report(args: &Args, samples: &[Sample], conn_errors: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut status: BTreeMap<u16, u64> = BTreeMap::new();
    for s in samples {
        *status.entry(s.status).or_default() += 1;
    }
    let ok = samples
        .iter()
        .filter(|s| (200..300).contains(&s.status) && s.ok_body)
        .count();
    let status_json: Vec<String> = status.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    let per_spec: Vec<String> = args
        .specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.spec == i).collect();
            let done: Vec<&&Sample> = mine.iter().filter(|s| s.status != 0).collect();
            let bad_body = done
                .iter()
                .filter(|s| (200..300).contains(&s.status) && !s.ok_body)
                .count();
            format!(
                "{{\"name\":{},\"requests\":{},\"bytes\":{},\"bad_body\":{},\"latency\":{},\"ttfb\":{}}}",
                json_str(&spec.name),
                mine.len(),
                done.iter().map(|s| s.bytes).sum::<u64>(),
                bad_body,
                dist_json(done.iter().map(|s| s.latency_us).collect()),
                dist_json(done.iter().map(|s| s.ttfb_us).collect()),
            )
        })
        .collect();
    let all_done: Vec<u64> = samples
        .iter()
        .filter(|s| s.status != 0)
        .map(|s| s.latency_us)
        .collect();
    format!(
        "{{\"requests\":{},\"ok\":{},\"connection_errors\":{},\"elapsed_s\":{:.3},\"rps\":{:.1},\"status\":{{{}}},\"latency\":{},\"specs\":[{}]}}",
        samples.len(),
        ok,
        conn_errors,
        secs,
        samples.len() as f64 / secs,
        status_json.join(","),
        dist_json(all_done),
        per_spec.join(",")
    )
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    let handles: Vec<_> = (0..args.connections)
        .map(|_| {
            let args = Arc::clone(&args);
            let next = Arc::clone(&next);
            thread::spawn(move || worker(&args, &next, deadline))
        })
        .collect();
    let mut samples = Vec::new();
    let mut conn_errors = 0;
    for h in handles {
        match h.join() {
            Ok((s, e)) => {
                samples.extend(s);
                conn_errors += e;
            }
            Err(_) => {
                eprintln!("loadgen: a worker thread panicked");
                return ExitCode::from(1);
            }
        }
    }
    let elapsed = start.elapsed();
    println!("{}", report(&args, &samples, conn_errors, elapsed));
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `raw` to the first connection, returns what `read_response` made of it.
    fn serve(raw: &'static [u8], expect: Option<&[u8]>) -> io::Result<Response> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Byte by byte: every boundary is exercised.
            for b in raw {
                s.write_all(&[*b]).unwrap();
            }
        });
        let (_w, mut r) = connect(&addr, Duration::from_secs(5)).unwrap();
        let mut line = Vec::new();
        let mut buf = vec![0u8; 7];
        let out = read_response(&mut r, expect, &mut line, &mut buf);
        t.join().unwrap();
        out
    }

    #[test]
    fn content_length_chunked_close_and_expect() {
        let r = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", None).unwrap();
        assert_eq!((r.status, r.bytes, r.close, r.found), (200, 5, false, true));

        let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n8;ext=1\r\n[DONE]\n\n\r\n0\r\nx-trailer: 1\r\n\r\n";
        let r = serve(chunked, Some(b"[DONE]")).unwrap();
        assert_eq!((r.status, r.bytes, r.found), (200, 14, true));
        let r = serve(chunked, Some(b"message_stop")).unwrap();
        assert!(!r.found);

        let r = serve(b"HTTP/1.1 503 X\r\nconnection: close\r\n\r\nbye", None).unwrap();
        assert_eq!((r.status, r.bytes, r.close), (503, 3, true));

        assert!(serve(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", None).is_err());
        assert!(serve(b"garbage\r\n\r\n", None).is_err());
    }

    #[test]
    fn spec_file_becomes_a_request() {
        let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.spec");
        std::fs::write(
            &path,
            "POST /v1/x\ncontent-type: application/json\nx-loadgen-expect: [DONE]\n\n{\"a\":1}",
        )
        .unwrap();
        let spec = parse_spec(path.to_str().unwrap(), "127.0.0.1:9").unwrap();
        assert_eq!(spec.name, "x");
        assert_eq!(spec.expect.as_deref(), Some(&b"[DONE]"[..]));
        assert_eq!(
            String::from_utf8(spec.wire).unwrap(),
            "POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:9\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
