//! The kernel struct fields the eBPF programs read, each declared once.
//!
//! Rust eBPF cannot emit CO-RE relocations (aya issue 349), so every offset is a `u32` global in
//! the object that the agent resolves from the running kernel's BTF and writes before load
//! (`EbpfLoader::override_global`). [`kernel_fields!`] is the one list: the eBPF side expands it
//! into those globals (ebpf/src/kernel.rs), this crate into [`FIELDS`] and the global names, and
//! the agent resolves each [`Lookup`] (agent/src/bpf/features.rs) and writes every row
//! (agent/src/bpf/loader.rs), refusing to load when one is unresolved. Adding a field is one
//! line in the table below.

/// How the agent finds one value in the running kernel's BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// `offsetof(struct, path...)` of the first `(struct, path)` the kernel has: later ones are
    /// fallbacks for fields renamed or moved between releases. A path of several members goes
    /// into nested structs (`device.driver_override.name`); anonymous members are looked
    /// through.
    Member(&'static [(&'static str, &'static [&'static str])]),
    /// The sum of two member offsets: a field of a struct embedded by value
    /// (`file.f_pos_lock` + `mutex.owner`).
    Sum(
        (&'static str, &'static [&'static str]),
        (&'static str, &'static [&'static str]),
    ),
    /// `sizeof(struct)`.
    Size(&'static str),
    /// Where the syscall number is in `struct pt_regs`, for the agent's architecture.
    SyscallNr,
    /// Where syscall argument `n` is in `struct pt_regs`, for the agent's architecture.
    SyscallArg(u32),
    /// What to subtract from a `struct device *` to reach the struct holding the
    /// `driver_override` pointer: `offsetof(struct pci_dev, dev)`, or 0 where the driver core
    /// keeps it in `struct device` (6.19, backported by Debian to 6.12.118).
    PciOverrideBase,
}

/// One row of the table: the global's symbol name and how its value is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelField {
    pub global: &'static str,
    pub lookup: Lookup,
}

/// Turns one row's right-hand side into a [`Lookup`] (the table's syntax):
/// `s.f` or `s.f | t.g.h` (fallbacks), `s.f + t.g` (sum), `size s`, `syscall_nr`,
/// `syscall_arg N`, `pci_override_base`.
#[doc(hidden)]
#[macro_export]
macro_rules! __kernel_field_lookup {
    (size $s:ident) => {
        $crate::kernel_fields::Lookup::Size(stringify!($s))
    };
    (syscall_nr) => {
        $crate::kernel_fields::Lookup::SyscallNr
    };
    (syscall_arg $n:literal) => {
        $crate::kernel_fields::Lookup::SyscallArg($n)
    };
    (pci_override_base) => {
        $crate::kernel_fields::Lookup::PciOverrideBase
    };
    ($s:ident $(. $f:ident)+ + $t:ident $(. $g:ident)+) => {
        $crate::kernel_fields::Lookup::Sum(
            (stringify!($s), &[$(stringify!($f)),+]),
            (stringify!($t), &[$(stringify!($g)),+]),
        )
    };
    ($($s:ident $(. $f:ident)+)|+) => {
        $crate::kernel_fields::Lookup::Member(&[$((stringify!($s), &[$(stringify!($f)),+])),+])
    };
}

/// The table. Calls `$then! { rows }`, each row `/// doc` then `GLOBAL = [lookup];`: the
/// eBPF side defines the globals from it, this crate [`FIELDS`]. A global whose name stays the
/// same on every architecture keeps the x86-64 name (`OFF_REGS_*`, ebpf/src/syscall_abi.rs).
#[macro_export]
macro_rules! kernel_fields {
    ($then:ident) => {
        $then! {
            /// `offsetof(struct device, driver)`.
            OFF_DEVICE_DRIVER = [device.driver];
            /// `offsetof(struct device, iommu_group)`.
            OFF_DEVICE_IOMMU_GROUP = [device.iommu_group];
            /// `offsetof(struct iommu_group, id)`.
            OFF_GROUP_ID = [iommu_group.id];
            /// `offsetof(struct inode, i_rdev)`.
            OFF_INODE_RDEV = [inode.i_rdev];
            /// `offsetof(struct file, f_inode)`.
            OFF_FILE_INODE = [file.f_inode];
            /// `offsetof(struct inode, i_sb)`.
            OFF_INODE_SB = [inode.i_sb];
            /// `offsetof(struct inode, i_ino)`.
            OFF_INODE_INO = [inode.i_ino];
            /// `offsetof(struct super_block, s_magic)`.
            OFF_SB_MAGIC = [super_block.s_magic];
            /// `offsetof(struct super_block, s_dev)`.
            OFF_SB_DEV = [super_block.s_dev];
            /// `offsetof(struct vfsmount, mnt_sb)`.
            OFF_MNT_SB = [vfsmount.mnt_sb];
            /// `offsetof(struct device, devt)`.
            OFF_DEVICE_DEVT = [device.devt];
            /// `offsetof(struct device, class)`.
            OFF_DEVICE_CLASS = [device.class];
            /// `offsetof(struct task_struct, mm)`.
            OFF_TASK_MM = [task_struct.mm];
            /// `offsetof(struct task_struct, stack)`.
            OFF_TASK_STACK = [task_struct.stack];
            /// `offsetof(struct mm_struct, exe_file)`.
            OFF_MM_EXE_FILE = [mm_struct.exe_file];
            /// The syscall number in `struct pt_regs`: x86-64 `orig_ax` (u64), arm64
            /// `syscallno` (s32).
            OFF_REGS_ORIG_AX = [syscall_nr];
            /// Syscall argument 0: x86-64 `di`, arm64 `orig_x0`.
            OFF_REGS_DI = [syscall_arg 0];
            /// Syscall argument 1: x86-64 `si`, arm64 `regs[1]`.
            OFF_REGS_SI = [syscall_arg 1];
            /// Syscall argument 2: x86-64 `dx`, arm64 `regs[2]`.
            OFF_REGS_DX = [syscall_arg 2];
            /// `sizeof(struct pt_regs)`.
            PT_REGS_SIZE = [size pt_regs];
            /// `offsetof(struct inode, i_private)` (kernfs keeps the `kernfs_node` there).
            OFF_INODE_PRIVATE = [inode.i_private];
            /// `offsetof(struct kernfs_node, name)`.
            OFF_KN_NAME = [kernfs_node.name];
            /// `offsetof(struct kernfs_node, parent)` (`__parent` from 6.15, RCU-protected).
            OFF_KN_PARENT = [kernfs_node.parent | kernfs_node.__parent];
            /// `offsetof(struct file, f_mode)`.
            OFF_FILE_MODE = [file.f_mode];
            /// `offsetof(struct file, f_count)`, or of `f_ref` from 6.13 (`file_ref_t`, its
            /// counter first). FILE_COUNT_ONE says which one.
            OFF_FILE_COUNT = [file.f_count | file.f_ref];
            /// `offsetof(struct file, f_pos_lock) + offsetof(struct mutex, owner)`.
            OFF_FILE_POS_OWNER = [file.f_pos_lock + mutex.owner];
            /// `offsetof(struct task_struct, files)`.
            OFF_TASK_FILES = [task_struct.files];
            /// `offsetof(struct files_struct, fdt)`.
            OFF_FILES_FDT = [files_struct.fdt];
            /// `offsetof(struct fdtable, fd)`.
            OFF_FDT_FD = [fdtable.fd];
            /// `offsetof(struct fdtable, max_fds)`.
            OFF_FDT_MAX_FDS = [fdtable.max_fds];
            /// `offsetof(struct task_struct, flags)`.
            OFF_TASK_FLAGS = [task_struct.flags];
            /// `offsetof(struct task_struct, ptrace)`.
            OFF_TASK_PTRACE = [task_struct.ptrace];
            /// What to subtract from a `struct device *` to reach the struct holding the
            /// override's pointer: `offsetof(struct pci_dev, dev)`, or 0 where the driver core
            /// keeps it in `struct device` (6.19, backported by Debian to 6.12.118).
            OFF_PCI_DEV_DEV = [pci_override_base];
            /// The override pointer's offset in that struct: `pci_dev.driver_override`, or
            /// `device.driver_override.name` once the driver core holds it.
            OFF_PCI_DEV_OVERRIDE = [pci_dev.driver_override | device.driver_override.name];
        }
    };
}

macro_rules! define_fields {
    ($($(#[$doc:meta])* $name:ident = [$($lookup:tt)+];)+) => {
        /// The names of the offset globals (re-exported by [`crate::names`]).
        pub mod globals {
            $(
                $(#[$doc])*
                pub const $name: &str = stringify!($name);
            )+
        }

        /// Every row of the table, in its order.
        pub const FIELDS: &[KernelField] = &[
            $(KernelField {
                global: stringify!($name),
                lookup: $crate::__kernel_field_lookup!($($lookup)+),
            }),+
        ];
    };
}

kernel_fields!(define_fields);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_each_form() {
        let find = |g: &str| FIELDS.iter().find(|f| f.global == g).map(|f| f.lookup);
        assert_eq!(
            find(globals::OFF_DEVICE_DRIVER),
            Some(Lookup::Member(&[("device", &["driver"])]))
        );
        assert_eq!(
            find("OFF_KN_PARENT"),
            Some(Lookup::Member(&[
                ("kernfs_node", &["parent"]),
                ("kernfs_node", &["__parent"])
            ]))
        );
        assert_eq!(
            find("OFF_PCI_DEV_OVERRIDE"),
            Some(Lookup::Member(&[
                ("pci_dev", &["driver_override"]),
                ("device", &["driver_override", "name"])
            ]))
        );
        assert_eq!(
            find("OFF_FILE_POS_OWNER"),
            Some(Lookup::Sum(
                ("file", &["f_pos_lock"]),
                ("mutex", &["owner"])
            ))
        );
        assert_eq!(find("PT_REGS_SIZE"), Some(Lookup::Size("pt_regs")));
        assert_eq!(find("OFF_REGS_SI"), Some(Lookup::SyscallArg(1)));
        assert_eq!(FIELDS.len(), 34);
    }

    #[test]
    fn each_global_is_declared_once() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert!(
                FIELDS[i + 1..].iter().all(|g| g.global != f.global),
                "{} twice",
                f.global
            );
        }
    }
}
