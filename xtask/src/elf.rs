//! Just enough ELF64 reading for two questions: a kernel module's `.modinfo`, and whether a binary
//! is static (no PT_INTERP), since the guest has no dynamic loader.
use anyhow::{bail, Result};

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?)).ok()
}

fn check_header(b: &[u8]) -> Result<()> {
    // ELF magic, 64-bit, little endian.
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        bail!("not a little-endian ELF64 file");
    }
    Ok(())
}

/// `e_machine` of an ELF64 little-endian file (62 x86_64, 183 aarch64).
pub fn machine(b: &[u8]) -> Option<u16> {
    check_header(b).ok()?;
    u16_at(b, 0x12)
}

/// Contents of the section called `name`, if present.
pub fn section<'a>(b: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    check_header(b)?;
    let parse = || -> Option<Option<&'a [u8]>> {
        let shoff = u64_at(b, 0x28)?;
        let shentsize = usize::from(u16_at(b, 0x3a)?);
        let shnum = usize::from(u16_at(b, 0x3c)?);
        let shstrndx = usize::from(u16_at(b, 0x3e)?);
        let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
        let strtab = header(shstrndx)?;
        let (str_off, str_size) = (u64_at(b, strtab + 24)?, u64_at(b, strtab + 32)?);
        let names = b.get(str_off..str_off.checked_add(str_size)?)?;
        for i in 0..shnum {
            let h = header(i)?;
            let name_off = u32_at(b, h)? as usize;
            let this = names.get(name_off..)?.split(|c| *c == 0).next()?;
            if this == name.as_bytes() {
                let (off, size) = (u64_at(b, h + 24)?, u64_at(b, h + 32)?);
                return Some(Some(b.get(off..off.checked_add(size)?)?));
            }
        }
        Some(None)
    };
    match parse() {
        Some(found) => Ok(found),
        None => bail!("truncated or malformed ELF section table"),
    }
}

/// `key=value` pairs of a module's `.modinfo` section.
pub fn modinfo(b: &[u8]) -> Result<Vec<(String, String)>> {
    let Some(info) = section(b, ".modinfo")? else {
        bail!("no .modinfo section")
    };
    Ok(info
        .split(|c| *c == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// True when the executable asks for a dynamic loader (PT_INTERP).
pub fn is_dynamic(b: &[u8]) -> Result<bool> {
    check_header(b)?;
    let parse = || -> Option<bool> {
        let phoff = u64_at(b, 0x20)?;
        let phentsize = usize::from(u16_at(b, 0x36)?);
        let phnum = usize::from(u16_at(b, 0x38)?);
        for i in 0..phnum {
            // PT_INTERP = 3
            if u32_at(b, phoff.checked_add(i.checked_mul(phentsize)?)?)? == 3 {
                return Some(true);
            }
        }
        Some(false)
    };
    match parse() {
        Some(d) => Ok(d),
        None => bail!("truncated or malformed ELF program headers"),
    }
}
