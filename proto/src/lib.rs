//! CRIU's image messages (package `criu`) and cryo's own records (package `cryo`), plus
//! the magic numbers that start each image file.

#[allow(clippy::all, clippy::pedantic)]
pub mod criu {
    include!(concat!(env!("OUT_DIR"), "/criu.rs"));
}

#[allow(clippy::all, clippy::pedantic)]
pub mod cryo {
    include!(concat!(env!("OUT_DIR"), "/cryo.rs"));
}

/// Image magics (CRIU's criu/include/magic.h). Every image but `inventory.img` starts
/// with `IMG_COMMON_MAGIC`, then its own magic; raw images (`pages-N.img`) have none.
pub mod magic {
    pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
    pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
    /// `inventory.img`
    pub const INVENTORY_MAGIC: u32 = 0x5831_3116;
    /// `pstree.img`
    pub const PSTREE_MAGIC: u32 = 0x5027_3030;
    /// `core-<tid>.img`
    pub const CORE_MAGIC: u32 = 0x5505_3847;
    /// `ids-<pid>.img`
    pub const IDS_MAGIC: u32 = 0x5443_2030;
    /// `mm-<pid>.img`
    pub const MM_MAGIC: u32 = 0x5749_2820;
    /// `pagemap-<pid>.img`
    pub const PAGEMAP_MAGIC: u32 = 0x5608_4025;
    /// `files.img`
    pub const FILES_MAGIC: u32 = 0x5630_3138;
    /// `fdinfo-<files_id>.img`
    pub const FDINFO_MAGIC: u32 = 0x5621_3732;
    /// `fs-<pid>.img`
    pub const FS_MAGIC: u32 = 0x5140_3912;
    /// `creds-<pid>.img` (older CRIU; newer ones keep creds in core)
    pub const CREDS_MAGIC: u32 = 0x5402_3547;
    /// `cryo-core-<pid>.img`: cryo's own per-task records (not a CRIU image).
    pub const CRYO_CPU: u32 = 0x4352_5901;
}

#[cfg(test)]
mod tests {
    use super::criu::*;
    use prost::Message;

    #[test]
    fn pstree_wire_format() {
        let e = PstreeEntry {
            pid: 5,
            ppid: 1,
            pgid: 5,
            sid: 5,
            threads: vec![5],
        };
        // field 1 varint 5, field 2 varint 1, 3 → 5, 4 → 5, field 5 (repeated, unpacked) → 5
        assert_eq!(
            e.encode_to_vec(),
            vec![0x08, 5, 0x10, 1, 0x18, 5, 0x20, 5, 0x28, 5]
        );
    }

    #[test]
    fn required_zero_fields_are_written() {
        // proto2 `required` scalars must be on the wire even when zero (crit checks).
        let e = PagemapHead { pages_id: 0 };
        assert_eq!(e.encode_to_vec(), vec![0x08, 0]);
    }
}
