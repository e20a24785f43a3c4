//! Refusing an Envoy this module was not built for. Envoy compares the ABI version a module
//! returns from `envoy_dynamic_module_on_program_init` with its own but only warns on a
//! mismatch, and keeps no way for a module to ask for its version; a changed callback
//! signature would go unnoticed (only a missing symbol fails a load). So the module checks
//! the running Envoy itself: the set of ABI callbacks Envoy exports (the
//! `envoy_dynamic_module_callback_*` names in its dynamic symbol table) must be exactly the
//! set of the Envoy release this module was built for ([`BUILT_FOR`], listed in
//! `envoy-1.40-callbacks.txt` from that Envoy binary). Every ABI revision so far has added or
//! renamed callbacks, so a different ABI shows as a different set.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The Envoy release whose ABI this module implements.
pub const BUILT_FOR: &str = "Envoy 1.40";
/// The callbacks Envoy 1.40.0 exports (`nm -D --defined-only envoy`), one per line.
pub const EXPECTED: &str = include_str!("envoy-1.40-callbacks.txt");

const PREFIX: &str = "envoy_dynamic_module_callback_";

/// Checks the process's own executable (Envoy). Ok: the number of callbacks matched.
pub fn check_running_envoy() -> Result<usize, String> {
    let found = exported(Path::new("/proc/self/exe"), PREFIX)
        .map_err(|e| format!("cannot read Envoy's exported symbols: {e}"))?;
    compare(&found, EXPECTED)
}

/// Ok when `found` is exactly the expected list; else what differs.
pub fn compare(found: &BTreeSet<String>, expected: &str) -> Result<usize, String> {
    let expected: BTreeSet<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
    let missing: Vec<&str> = expected
        .iter()
        .filter(|n| !found.contains(**n))
        .copied()
        .collect();
    let unknown: Vec<&str> = found
        .iter()
        .map(String::as_str)
        .filter(|n| !expected.contains(n))
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return Ok(expected.len());
    }
    let sample = |v: &[&str]| v.iter().take(3).copied().collect::<Vec<_>>().join(", ");
    Err(format!(
        "this Envoy's dynamic-module ABI is not the one of {BUILT_FOR} this module was built for: \
         it exports {} ABI callbacks where {} were expected ({} missing{}{}; {} unknown to this build{}{})",
        found.len(),
        expected.len(),
        missing.len(),
        if missing.is_empty() { "" } else { ": " },
        sample(&missing),
        unknown.len(),
        if unknown.is_empty() { "" } else { ": " },
        sample(&unknown),
    ))
}

/// Names of the defined symbols starting with `prefix` in an ELF64 little-endian file's
/// dynamic symbol table (`.dynsym`).
pub fn exported(path: &Path, prefix: &str) -> Result<BTreeSet<String>, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let header = read_at(&mut f, 0, 64)?;
    if header.get(..4) != Some(b"\x7fELF") || header.get(4) != Some(&2) || header.get(5) != Some(&1)
    {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let shoff = u64_at(&header, 0x28)?;
    let shentsize = u64::from(u16_at(&header, 0x3a)?);
    let shnum = u64::from(u16_at(&header, 0x3c)?);
    if shentsize < 64 || shnum == 0 {
        return Err("no section headers".into());
    }
    let sections = read_at(&mut f, shoff, shentsize.saturating_mul(shnum))?;
    let section = |i: u64| -> Result<(u32, u64, u64, u32, u64), String> {
        let at = usize::try_from(i.saturating_mul(shentsize)).map_err(|e| e.to_string())?;
        let s = sections
            .get(at..at + 64)
            .ok_or("section header out of range")?;
        Ok((
            u32_at(s, 4)?,  // sh_type
            u64_at(s, 24)?, // sh_offset
            u64_at(s, 32)?, // sh_size
            u32_at(s, 40)?, // sh_link
            u64_at(s, 56)?, // sh_entsize
        ))
    };
    const SHT_DYNSYM: u32 = 11;
    let dynsym = (0..shnum)
        .map(section)
        .find(|s| matches!(s, Ok((SHT_DYNSYM, ..))))
        .ok_or("no dynamic symbol table")??;
    let (_, off, size, link, entsize) = dynsym;
    let (_, str_off, str_size, _, _) = section(u64::from(link))?;
    let symbols = read_at(&mut f, off, size)?;
    let strings = read_at(&mut f, str_off, str_size)?;
    let entsize = usize::try_from(entsize.max(24)).map_err(|e| e.to_string())?;
    let mut out = BTreeSet::new();
    for sym in symbols.chunks_exact(entsize) {
        let name = u32_at(sym, 0)? as usize;
        let defined = u16_at(sym, 6)? != 0;
        let Some(rest) = strings.get(name..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let Ok(name) = std::str::from_utf8(rest.get(..end).unwrap_or_default()) else {
            continue;
        };
        if defined && name.starts_with(prefix) {
            out.insert(name.to_string());
        }
    }
    Ok(out)
}

/// At most this many bytes are read for one table (Envoy's are well under 1 MiB).
const MAX_READ: u64 = 64 << 20;

fn read_at(f: &mut File, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    if len > MAX_READ {
        return Err(format!("a table of {len} bytes"));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    let w = b.get(at..at + 2).ok_or("truncated ELF")?;
    Ok(u16::from_le_bytes([w[0], w[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    let w: [u8; 4] = b
        .get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .ok_or("truncated ELF")?;
    Ok(u32::from_le_bytes(w))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    let w: [u8; 8] = b
        .get(at..at + 8)
        .and_then(|w| w.try_into().ok())
        .ok_or("truncated ELF")?;
    Ok(u64::from_le_bytes(w))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_exact_set_passes() {
        let expected = "a\nb\nc\n";
        assert_eq!(compare(&set(&["a", "b", "c"]), expected), Ok(3));
        let newer = compare(&set(&["a", "b", "c", "d"]), expected).unwrap_err();
        assert!(
            newer.contains("0 missing; 1 unknown to this build: d"),
            "{newer}"
        );
        let older = compare(&set(&["a", "b"]), expected).unwrap_err();
        assert!(older.contains("1 missing: c; 0 unknown"), "{older}");
        assert!(older.contains("Envoy 1.40"), "{older}");
    }

    #[test]
    fn the_list_is_envoy_1_40s() {
        let names: Vec<&str> = EXPECTED.lines().collect();
        assert_eq!(names.len(), 781);
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(names.iter().all(|n| n.starts_with(PREFIX)));
        for used in [
            "envoy_dynamic_module_callback_http_get_body_chunks",
            "envoy_dynamic_module_callback_http_filter_http_callout",
        ] {
            assert!(names.contains(&used), "{used}");
        }
    }

    /// The reader on a real ELF: the C library this test runs with exports `malloc`, and
    /// this test executable (not Envoy) exports no ABI callback at all, so a module loaded
    /// into it would refuse.
    #[test]
    fn reads_dynamic_symbols_of_real_elf_files() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("libc.so") || p.contains("libc-"))
            .expect("libc mapped");
        let found = exported(Path::new(libc), "mallo").unwrap();
        assert!(found.contains("malloc"), "{found:?}");
        let me = exported(Path::new("/proc/self/exe"), PREFIX).unwrap();
        assert!(me.is_empty());
        assert!(check_running_envoy().is_err());
        assert!(exported(Path::new("/proc/self/maps"), PREFIX).is_err());
    }
}
