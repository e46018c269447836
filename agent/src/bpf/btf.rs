//! Just enough of a BTF reader to answer the agent's questions about the running kernel: does a
//! function or BTF tracepoint exist, and at which byte offset is a struct member. (aya 0.14 keeps
//! its BTF type lookups crate-private; Rust eBPF cannot emit CO-RE relocations yet.)
//!
//! Format: Documentation/bpf/btf.rst. Pure: takes the bytes, never reads the kernel itself.
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF data (bad magic {0:#06x})")]
    BadMagic(u16),
    #[error("BTF data truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown BTF kind {kind} at type id {id}")]
    UnknownKind { kind: u32, id: u32 },
}

const MAGIC: u16 = 0xeb9f;

// BTF kinds the reader needs to tell apart.
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Clone, Copy, Debug)]
struct TypeRecord {
    kind: u32,
    kind_flag: bool,
    vlen: u32,
    name_off: u32,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// Byte offset, within the type section, of this type's trailing data.
    extra: usize,
}

/// A parsed BTF blob (`/sys/kernel/btf/vmlinux`).
pub struct KernelBtf {
    types: Vec<TypeRecord>, // index = type id - 1
    type_section: Vec<u8>,
    strings: Vec<u8>,
    functions: HashMap<String, u32>,
    structs: HashMap<String, u32>,
    typedefs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Truncated(off))
}

impl KernelBtf {
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .ok_or(BtfError::Truncated(0))?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len + off;
            data.get(start..start + len)
                .map(<[u8]>::to_vec)
                .ok_or(BtfError::Truncated(start + len))
        };
        let type_section = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;

        let mut btf = KernelBtf {
            types: Vec::new(),
            type_section,
            strings,
            functions: HashMap::new(),
            structs: HashMap::new(),
            typedefs: HashMap::new(),
        };
        btf.index_types()?;
        Ok(btf)
    }

    fn index_types(&mut self) -> Result<(), BtfError> {
        let ts = &self.type_section;
        let mut pos = 0;
        while pos < ts.len() {
            let name_off = u32_at(ts, pos)?;
            let info = u32_at(ts, pos + 4)?;
            let size_or_type = u32_at(ts, pos + 8)?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let extra = pos + 12;
            let id = self.types.len() as u32 + 1;
            let extra_len = match kind {
                1 => 4,                      // INT
                2 | 7..=12 | 16 | 18 => 0, // PTR FWD TYPEDEF VOLATILE CONST RESTRICT FUNC FLOAT TYPE_TAG
                3 => 12,                   // ARRAY
                4 | 5 => 12 * vlen as usize, // STRUCT UNION
                6 => 8 * vlen as usize,    // ENUM
                13 => 8 * vlen as usize,   // FUNC_PROTO
                14 => 4,                   // VAR
                15 => 12 * vlen as usize,  // DATASEC
                17 => 4,                   // DECL_TAG
                19 => 12 * vlen as usize,  // ENUM64
                _ => return Err(BtfError::UnknownKind { kind, id }),
            };
            self.types.push(TypeRecord {
                kind,
                kind_flag: info >> 31 == 1,
                vlen,
                name_off,
                size_or_type,
                extra,
            });
            pos = extra + extra_len;
        }
        for (i, t) in self.types.iter().enumerate() {
            let id = i as u32 + 1;
            let table = match t.kind {
                KIND_FUNC => &mut self.functions,
                // Forward-declared structs have no members; keep the full definition.
                KIND_STRUCT if t.vlen > 0 => &mut self.structs,
                KIND_TYPEDEF => &mut self.typedefs,
                _ => continue,
            };
            let name = name_at(&self.strings, t.name_off);
            if !name.is_empty() {
                table.entry(name.to_owned()).or_insert(id);
            }
        }
        Ok(())
    }

    fn ty(&self, id: u32) -> Option<&TypeRecord> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    fn name(&self, off: u32) -> &str {
        name_at(&self.strings, off)
    }

    /// Whether vmlinux has a function of that name (a possible fentry/fexit target).
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// Whether the kernel has a BTF tracepoint of that name (`btf_trace_<name>` typedef).
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.typedefs.contains_key(&format!("btf_trace_{name}"))
    }

    /// `sizeof(struct name)`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.ty(*self.structs.get(name)?).map(|t| t.size_or_type)
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous struct/union members.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        self.member_path_offset(name, &[member])
    }

    /// Byte offset of a nested member (`device`, [`driver_override`, `name`]).
    pub fn member_path_offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut id = *self.structs.get(name)?;
        let mut bits = 0;
        for member in path {
            let (at, ty) = self.find_member(id, member, bits)?;
            bits = at;
            id = self.strip(ty);
        }
        Some(bits / 8)
    }

    /// (bit offset, type id) of `member`, looking into anonymous members too.
    fn find_member(&self, id: u32, member: &str, base_bits: u32) -> Option<(u32, u32)> {
        let t = self.ty(id)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for i in 0..t.vlen as usize {
            let at = t.extra + 12 * i;
            let m_name = u32_at(&self.type_section, at).ok()?;
            let m_type = u32_at(&self.type_section, at + 4).ok()?;
            let m_off = u32_at(&self.type_section, at + 8).ok()?;
            // With kind_flag set, the top 8 bits hold a bitfield size.
            let bits = if t.kind_flag {
                m_off & 0x00ff_ffff
            } else {
                m_off
            };
            let n = self.name(m_name);
            if n == member {
                return Some((base_bits + bits, m_type));
            }
            if n.is_empty() {
                if let Some(found) = self.find_member(self.strip(m_type), member, base_bits + bits)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn strip(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }
}

fn name_at(strings: &[u8], off: u32) -> &str {
    let Some(rest) = strings.get(off as usize..) else {
        return "";
    };
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, info, size_or_type, extra words) type records.
    fn blob(strings: &str, types: &[(u32, u32, u32, &[u32])]) -> Vec<u8> {
        let mut ts = Vec::new();
        for (name, info, sot, extra) in types {
            for w in [*name, *info, *sot].iter().chain(extra.iter()) {
                ts.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            ts.len() as u32,
            ts.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&ts);
        out.extend_from_slice(strings.as_bytes());
        out
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 }
    }

    #[test]
    fn finds_members_functions_and_tracepoints() {
        // offsets: 0 "" 1 "int" 5 "inode" 11 "i_mode" 18 "i_rdev" 25 "really_probe"
        // 38 "btf_trace_add_device_to_group"
        let strings = "\0int\0inode\0i_mode\0i_rdev\0really_probe\0btf_trace_add_device_to_group\0";
        let btf = blob(
            strings,
            &[
                (1, info(1, 0, false), 4, &[32]),                  // 1: int
                (0, info(4, 1, false), 4, &[18, 1, 32]), // 2: anon struct { i_rdev @ bit 32 }
                (5, info(4, 2, false), 16, &[11, 1, 0, 0, 2, 64]), // 3: struct inode { i_mode; anon @ bit 64 }
                (25, info(KIND_FUNC, 0, false), 0, &[]),           // 4: func really_probe
                (38, info(KIND_TYPEDEF, 0, false), 1, &[]),        // 5: typedef
            ],
        );
        let k = KernelBtf::parse(&btf).expect("parses");
        assert_eq!(k.member_offset("inode", "i_mode"), Some(0));
        assert_eq!(k.struct_size("inode"), Some(16));
        assert_eq!(k.member_offset("inode", "i_rdev"), Some(12));
        assert_eq!(k.member_offset("inode", "nope"), None);
        assert_eq!(k.member_offset("dentry", "d_name"), None);
        assert!(k.has_function("really_probe"));
        assert!(!k.has_function("iommu_device_use_default_domain"));
        assert!(k.has_tracepoint("add_device_to_group"));
    }

    #[test]
    fn nested_members_follow_named_struct_members() {
        // struct device { struct { int pad; int name; } driver_override @ byte 128; }
        let strings = "\0int\0device\0driver_override\0name\0";
        let btf = blob(
            strings,
            &[
                (1, info(1, 0, false), 4, &[32]),            // 1: int
                (0, info(4, 1, false), 16, &[28, 1, 64]),    // 2: anon struct { name @ bit 64 }
                (5, info(4, 1, false), 256, &[12, 2, 1024]), // 3: struct device
            ],
        );
        let k = KernelBtf::parse(&btf).expect("parses");
        assert_eq!(
            k.member_path_offset("device", &["driver_override", "name"]),
            Some(136)
        );
        // A named member's fields are not the struct's own.
        assert_eq!(k.member_offset("device", "name"), None);
        assert_eq!(
            k.member_path_offset("device", &["driver_override", "x"]),
            None
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            KernelBtf::parse(b"\x7fELF...."),
            Err(BtfError::BadMagic(_))
        ));
        assert!(matches!(
            KernelBtf::parse(&[0x9f, 0xeb, 1, 0]),
            Err(BtfError::Truncated(_))
        ));
    }

    /// Against the BTF of the kernel this test runs on, where it has one.
    #[test]
    fn reads_running_kernel_when_available() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let k = KernelBtf::parse(&data).expect("the running kernel's BTF parses");
        assert!(k.has_function("really_probe"));
        assert_eq!(
            k.member_offset("device", "kobj"),
            Some(0),
            "kobj leads struct device"
        );
        assert!(k.member_offset("device", "driver").is_some());
        assert!(k.member_offset("inode", "i_rdev").is_some());
        // The BTF is the running kernel's: the host's, also when an aarch64 build of these tests
        // runs under user-mode emulation. Its pt_regs says which architecture it is.
        let btf_arm64 = k.member_offset("pt_regs", "syscallno").is_some();
        if btf_arm64 != cfg!(target_arch = "aarch64") {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(k.struct_size("pt_regs"), Some(21 * 8), "x86_64 pt_regs");
        // Where the programs read the syscall and its arguments on this architecture.
        let f = |o: Option<u32>| o.expect("resolved");
        let nr = f(crate::bpf::features::syscall_regs::nr(&k));
        let args: Vec<u32> = (0..3)
            .map(|n| f(crate::bpf::features::syscall_regs::arg(&k, n)))
            .collect();
        #[cfg(target_arch = "x86_64")]
        assert_eq!((nr, args), (15 * 8, vec![14 * 8, 13 * 8, 12 * 8]));
        #[cfg(target_arch = "aarch64")]
        assert_eq!((nr, args), (35 * 8, vec![34 * 8, 8, 16]));
    }
}
