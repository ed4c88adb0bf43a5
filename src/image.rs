//! CRIU's on-disk image framing: `[IMG_COMMON_MAGIC] MAGIC { u32 size, protobuf }`.
//! `inventory.img` carries only its own magic; raw page data (`pages-N.img`) has none.
//! Readers bound every entry's size and report truncation and bad magic with the path.

use cryo_proto::magic;
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// CRIU image version 1.1 (every image but inventory has the common magic).
pub const IMG_VERSION: u32 = 2;
/// No single protobuf entry cryo writes comes near this; larger means corruption.
const MAX_ENTRY: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("missing image file {}", path.display())]
    Missing { path: PathBuf },
    #[error("{}: wrong magic 0x{found:08x}, expected 0x{expected:08x} (not a {what} image)", path.display())]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        what: &'static str,
    },
    #[error("{}: truncated at byte {offset}", path.display())]
    Truncated { path: PathBuf, offset: u64 },
    #[error("{}: entry at byte {offset} claims {size} bytes (corrupt image)", path.display())]
    TooLarge {
        path: PathBuf,
        offset: u64,
        size: u32,
    },
    #[error("{}: cannot decode entry at byte {offset}: {source}", path.display())]
    Decode {
        path: PathBuf,
        offset: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
}

/// The kind of an image file: its magic and whether it has the common prefix.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub name: &'static str,
    pub magic: u32,
    pub common: bool,
}

pub const INVENTORY: Kind = Kind {
    name: "inventory",
    magic: magic::INVENTORY_MAGIC,
    common: false,
};
pub const PSTREE: Kind = Kind {
    name: "pstree",
    magic: magic::PSTREE_MAGIC,
    common: true,
};
pub const CORE: Kind = Kind {
    name: "core",
    magic: magic::CORE_MAGIC,
    common: true,
};
pub const IDS: Kind = Kind {
    name: "ids",
    magic: magic::IDS_MAGIC,
    common: true,
};
pub const MM: Kind = Kind {
    name: "mm",
    magic: magic::MM_MAGIC,
    common: true,
};
pub const PAGEMAP: Kind = Kind {
    name: "pagemap",
    magic: magic::PAGEMAP_MAGIC,
    common: true,
};
pub const FILES: Kind = Kind {
    name: "files",
    magic: magic::FILES_MAGIC,
    common: true,
};
pub const FDINFO: Kind = Kind {
    name: "fdinfo",
    magic: magic::FDINFO_MAGIC,
    common: true,
};
pub const FS: Kind = Kind {
    name: "fs",
    magic: magic::FS_MAGIC,
    common: true,
};
pub const CREDS: Kind = Kind {
    name: "creds",
    magic: magic::CREDS_MAGIC,
    common: true,
};
pub const UTSNS: Kind = Kind {
    name: "utsns",
    magic: magic::UTSNS_MAGIC,
    common: true,
};
pub const IPC_VAR: Kind = Kind {
    name: "ipcns-var",
    magic: magic::IPC_VAR_MAGIC,
    common: true,
};
pub const CRYO_NS: Kind = Kind {
    name: "cryo-ns",
    magic: magic::CRYO_NS,
    common: true,
};
pub const SECCOMP: Kind = Kind {
    name: "seccomp",
    magic: magic::SECCOMP_MAGIC,
    common: true,
};
pub const CRYO_CPU: Kind = Kind {
    name: "cryo-cpu",
    magic: magic::CRYO_CPU,
    common: true,
};

/// An image directory.
#[derive(Debug, Clone)]
pub struct ImageDir {
    pub path: PathBuf,
}

impl ImageDir {
    /// Creates (mode 0700) or opens the directory for writing.
    pub fn create(path: &Path) -> Result<Self, ImageError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| ImageError::Io {
                path: path.into(),
                source,
            })?;
        Ok(ImageDir { path: path.into() })
    }

    pub fn open(path: &Path) -> Result<Self, ImageError> {
        if !path.is_dir() {
            return Err(ImageError::Missing { path: path.into() });
        }
        Ok(ImageDir { path: path.into() })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A new image file (0600) with its magic written.
    pub fn writer(&self, name: &str, kind: Kind) -> Result<ImgWriter, ImageError> {
        let mut w = self.raw_writer(name)?;
        if kind.common {
            w.put(&magic::IMG_COMMON_MAGIC.to_ne_bytes())?;
        }
        w.put(&kind.magic.to_ne_bytes())?;
        Ok(w)
    }

    /// A new file without magic (page data).
    pub fn raw_writer(&self, name: &str) -> Result<ImgWriter, ImageError> {
        let path = self.file(name);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| ImageError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(ImgWriter {
            out: BufWriter::with_capacity(64 << 10, f),
            path,
            buf: Vec::new(),
        })
    }

    pub fn reader(&self, name: &str, kind: Kind) -> Result<ImgReader, ImageError> {
        let path = self.file(name);
        let f = File::open(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ImageError::Missing { path: path.clone() },
            _ => ImageError::Io {
                path: path.clone(),
                source,
            },
        })?;
        ImgReader::new(BufReader::new(f), path, kind)
    }

    /// Reads a whole image expected to hold exactly one entry.
    pub fn read_one<M: Message + Default>(&self, name: &str, kind: Kind) -> Result<M, ImageError> {
        let mut r = self.reader(name, kind)?;
        r.next_entry()?.ok_or_else(|| ImageError::Invalid {
            path: r.path.clone(),
            msg: "no entry".into(),
        })
    }

    pub fn write_one<M: Message>(&self, name: &str, kind: Kind, m: &M) -> Result<(), ImageError> {
        let mut w = self.writer(name, kind)?;
        w.entry(m)?;
        w.finish()
    }
}

pub struct ImgWriter {
    out: BufWriter<File>,
    path: PathBuf,
    buf: Vec<u8>,
}

impl ImgWriter {
    fn err(&self, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub fn put(&mut self, b: &[u8]) -> Result<(), ImageError> {
        self.out.write_all(b).map_err(|e| self.err(e))
    }

    pub fn entry<M: Message>(&mut self, m: &M) -> Result<(), ImageError> {
        self.buf.clear();
        m.encode(&mut self.buf)
            .map_err(|e| self.err(std::io::Error::other(e)))?;
        let len = (self.buf.len() as u32).to_ne_bytes();
        self.out.write_all(&len).map_err(|e| ImageError::Io {
            path: self.path.clone(),
            source: e,
        })?;
        self.out.write_all(&self.buf).map_err(|e| ImageError::Io {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Flushes and syncs: an image is complete only once it is on stable storage.
    pub fn finish(mut self) -> Result<(), ImageError> {
        self.out.flush().map_err(|e| self.err(e))?;
        self.out.get_ref().sync_data().map_err(|e| self.err(e))
    }
}

/// Reads entries from any byte source (a file, or a buffer in tests and fuzzing).
pub struct ImgReader<R: Read = BufReader<File>> {
    inp: R,
    pub path: PathBuf,
    offset: u64,
}

impl<R: Read> ImgReader<R> {
    /// Checks the magic(s) of `kind` at the start of `inp`.
    pub fn new(inp: R, path: PathBuf, kind: Kind) -> Result<Self, ImageError> {
        let mut r = ImgReader {
            inp,
            path,
            offset: 0,
        };
        if kind.common {
            r.expect_magic(magic::IMG_COMMON_MAGIC, kind.name)?;
        }
        r.expect_magic(kind.magic, kind.name)?;
        Ok(r)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, ImageError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inp.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(ImageError::Truncated {
                        path: self.path.clone(),
                        offset: self.offset + got as u64,
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ImageError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        self.offset += got as u64;
        Ok(true)
    }

    fn expect_magic(&mut self, expected: u32, what: &'static str) -> Result<(), ImageError> {
        let mut b = [0u8; 4];
        if !self.fill(&mut b)? {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                offset: self.offset,
            });
        }
        let found = u32::from_ne_bytes(b);
        if found != expected {
            return Err(ImageError::BadMagic {
                path: self.path.clone(),
                found,
                expected,
                what,
            });
        }
        Ok(())
    }

    /// The next entry, or `None` at a clean end of file.
    pub fn next_entry<M: Message + Default>(&mut self) -> Result<Option<M>, ImageError> {
        let start = self.offset;
        let mut b = [0u8; 4];
        if !self.fill(&mut b)? {
            return Ok(None);
        }
        let size = u32::from_ne_bytes(b);
        if size > MAX_ENTRY {
            return Err(ImageError::TooLarge {
                path: self.path.clone(),
                offset: start,
                size,
            });
        }
        let mut buf = vec![0u8; size as usize];
        if !self.fill(&mut buf)? && size > 0 {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                offset: self.offset,
            });
        }
        M::decode(buf.as_slice())
            .map(Some)
            .map_err(|source| ImageError::Decode {
                path: self.path.clone(),
                offset: start,
                source,
            })
    }

    /// The next `n` raw bytes (data that follows an entry, as in pipes-data.img); read in
    /// chunks so a corrupt length cannot make us allocate more than the file holds.
    pub fn read_raw(&mut self, n: u64) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            if !self.fill(&mut chunk[..k])? {
                return Err(ImageError::Truncated {
                    path: self.path.clone(),
                    offset: self.offset,
                });
            }
            out.extend_from_slice(&chunk[..k]);
            left -= k as u64;
        }
        Ok(out)
    }

    /// Everything up to the end of the file.
    pub fn read_rest(&mut self, out: &mut Vec<u8>) -> Result<(), ImageError> {
        let start = out.len();
        self.inp.read_to_end(out).map_err(|source| ImageError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.offset += (out.len() - start) as u64;
        Ok(())
    }

    pub fn all<M: Message + Default>(&mut self) -> Result<Vec<M>, ImageError> {
        let mut v = Vec::new();
        while let Some(m) = self.next_entry()? {
            v.push(m);
        }
        Ok(v)
    }
}

/// Decodes every entry of an image held in memory (used by tests and the fuzzer).
pub fn decode_all<M: Message + Default>(bytes: &[u8], kind: Kind) -> Result<Vec<M>, ImageError> {
    ImgReader::new(bytes, PathBuf::from("<memory>"), kind)?.all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_proto::criu::{CoreEntry, MmEntry, PagemapEntry, PstreeEntry, VmaEntry};

    fn image(kind: Kind, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        if kind.common {
            b.extend(magic::IMG_COMMON_MAGIC.to_ne_bytes());
        }
        b.extend(kind.magic.to_ne_bytes());
        for e in entries {
            b.extend((e.len() as u32).to_ne_bytes());
            b.extend(e);
        }
        b
    }

    #[test]
    fn round_trip_and_errors() {
        let e = PstreeEntry {
            pid: 7,
            ppid: 1,
            pgid: 7,
            sid: 7,
            threads: vec![7],
        };
        let b = image(PSTREE, &[e.encode_to_vec(), e.encode_to_vec()]);
        assert_eq!(
            decode_all::<PstreeEntry>(&b, PSTREE).unwrap(),
            vec![e.clone(), e]
        );
        assert!(matches!(
            decode_all::<PstreeEntry>(&b[..b.len() - 1], PSTREE),
            Err(ImageError::Truncated { .. })
        ));
        assert!(matches!(
            decode_all::<PstreeEntry>(&b, CORE),
            Err(ImageError::BadMagic { .. })
        ));
        let mut huge = image(PSTREE, &[]);
        huge.extend(u32::MAX.to_ne_bytes());
        assert!(matches!(
            decode_all::<PstreeEntry>(&huge, PSTREE),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_all::<PstreeEntry>(&[], PSTREE),
            Err(ImageError::Truncated { .. })
        ));
    }

    /// Deterministic mutation fuzzing (the cargo-fuzz targets in fuzz/ go further):
    /// any byte string decodes to entries or an error, never a panic.
    #[test]
    fn mutated_images_never_panic() {
        let mm = MmEntry {
            vmas: vec![
                VmaEntry {
                    start: 0x1000,
                    end: 0x2000,
                    fd: -1,
                    ..Default::default()
                };
                3
            ],
            mm_saved_auxv: vec![1, 2, 3],
            ..Default::default()
        };
        let seeds = [
            image(MM, &[mm.encode_to_vec()]),
            image(CORE, &[CoreEntry::default().encode_to_vec()]),
            image(
                PAGEMAP,
                &[PagemapEntry {
                    vaddr: 1,
                    nr_pages: Some(2),
                    ..Default::default()
                }
                .encode_to_vec()],
            ),
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut b = seeds[(rnd() % 3) as usize].clone();
            for _ in 0..1 + rnd() % 8 {
                let i = (rnd() as usize) % b.len();
                match rnd() % 3 {
                    0 => b[i] = rnd() as u8,
                    1 => b.truncate(i.max(1)),
                    _ => b.insert(i, rnd() as u8),
                }
            }
            let _ = decode_all::<MmEntry>(&b, MM);
            let _ = decode_all::<CoreEntry>(&b, CORE);
            let _ = decode_all::<PagemapEntry>(&b, PAGEMAP);
        }
    }
}
