//! Image framing and protobuf decoding of every image kind restore reads.
#![no_main]
use cryo::image::{self, decode_all};
use cryo_proto::criu::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_all::<InventoryEntry>(data, image::INVENTORY);
    let _ = decode_all::<PstreeEntry>(data, image::PSTREE);
    let _ = decode_all::<CoreEntry>(data, image::CORE);
    let _ = decode_all::<MmEntry>(data, image::MM);
    let _ = decode_all::<PagemapEntry>(data, image::PAGEMAP);
    let _ = decode_all::<FileEntry>(data, image::FILES);
    let _ = decode_all::<FdinfoEntry>(data, image::FDINFO);
    let _ = decode_all::<FsEntry>(data, image::FS);
    // Entries followed by raw payloads (pipe data, queued packets, ghost files) and the
    // other fd-kind records, through the framing alone.
    let _ = decode_all::<PipeDataEntry>(data, image::FILES);
    let _ = decode_all::<SkPacketEntry>(data, image::FILES);
    let _ = decode_all::<GhostFileEntry>(data, image::FILES);
    let _ = decode_all::<MemfdInodeEntry>(data, image::FILES);
    let _ = decode_all::<FileLockEntry>(data, image::FILES);
    let _ = decode_all::<TtyInfoEntry>(data, image::FILES);
    let _ = decode_all::<TcpStreamEntry>(data, image::FILES);
    let _ = decode_all::<SeccompEntry>(data, image::FILES);
});
