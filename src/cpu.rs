//! CPU state of a thread: general registers (CRIU's `user_x86_regs_entry`), the FPU/SSE
//! part of the XSAVE area in CRIU's `user_x86_fpregs_entry` (so crit shows it), and the
//! whole raw XSAVE area in cryo's own `cpu_state_entry`, which restore uses as is.

use crate::ptrace::Regs;
use cryo_proto::criu::{UserX86FpregsEntry, UserX86RegsEntry, UserX86XsaveEntry};

pub fn regs_to_entry(r: &Regs) -> UserX86RegsEntry {
    UserX86RegsEntry {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: None,
    }
}

pub fn entry_to_regs(e: &UserX86RegsEntry) -> Regs {
    let mut r: Regs = crate::sys::ptrace::zeroed_regs();
    r.r15 = e.r15;
    r.r14 = e.r14;
    r.r13 = e.r13;
    r.r12 = e.r12;
    r.rbp = e.bp;
    r.rbx = e.bx;
    r.r11 = e.r11;
    r.r10 = e.r10;
    r.r9 = e.r9;
    r.r8 = e.r8;
    r.rax = e.ax;
    r.rcx = e.cx;
    r.rdx = e.dx;
    r.rsi = e.si;
    r.rdi = e.di;
    r.orig_rax = e.orig_ax;
    r.rip = e.ip;
    r.cs = e.cs;
    r.eflags = e.flags;
    r.rsp = e.sp;
    r.ss = e.ss;
    r.fs_base = e.fs_base;
    r.gs_base = e.gs_base;
    r.ds = e.ds;
    r.es = e.es;
    r.fs = e.fs;
    r.gs = e.gs;
    r
}

fn u16_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]) as u32)
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or_default()))
}
fn words(b: &[u8], o: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| u32_at(b, o + 4 * i)).collect()
}

/// The legacy FXSAVE region (first 512 bytes) plus the XSAVE header and YMM upper
/// halves, in CRIU's layout, for image readers; restore uses the raw area instead.
pub fn fpregs_entry(xsave: &[u8]) -> UserX86FpregsEntry {
    UserX86FpregsEntry {
        cwd: u16_at(xsave, 0),
        swd: u16_at(xsave, 2),
        twd: u16_at(xsave, 4),
        fop: u16_at(xsave, 6),
        rip: u64_at(xsave, 8),
        rdp: u64_at(xsave, 16),
        mxcsr: u32_at(xsave, 24),
        mxcsr_mask: u32_at(xsave, 28),
        st_space: words(xsave, 32, 32),
        xmm_space: words(xsave, 160, 64),
        padding: Vec::new(),
        xsave: (xsave.len() > 576).then(|| UserX86XsaveEntry {
            xstate_bv: u64_at(xsave, 512),
            ymmh_space: words(xsave, 576, 64),
            ..Default::default()
        }),
    }
}
