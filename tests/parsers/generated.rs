//! What the generated-input parser tests share: a seeded generator, the way
//! they spoil valid messages, and an allocator that records the largest
//! single allocation of each thread, so that a test can bound what any
//! input makes a parser allocate (each test runs on a thread of its own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The binary's allocator: the system's, recording [`LARGEST`].
pub struct Largest;

thread_local! {
    /// The largest single allocation this thread has made since it was set to 0.
    pub static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Not during the thread's own teardown, when its locals are gone.
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// A xorshift generator: the same seed, the same inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// A lowercase name of 1 to 40 letters.
    pub fn name(&mut self) -> String {
        let len = 1 + self.below(40);
        (0..len).map(|_| (b'a' + (self.byte() % 26)) as char).collect()
    }
}

/// A valid message spoiled one way or another, or left as it is: cut short,
/// bytes changed, bytes inserted, bytes appended.
pub fn mutate(r: &mut Rng, mut v: Vec<u8>) -> Vec<u8> {
    match r.below(5) {
        0 => v.truncate(r.below(v.len() + 1)),
        1 => {
            for _ in 0..1 + r.below(3) {
                let i = r.below(v.len().max(1));
                if let Some(b) = v.get_mut(i) {
                    *b = r.byte();
                }
            }
        }
        2 => {
            let i = r.below(v.len() + 1);
            let n = 1 + r.below(8);
            let extra = r.bytes(n);
            v.splice(i..i, extra);
        }
        3 => {
            let n = r.below(64);
            let tail = r.bytes(n);
            v.extend(tail);
        }
        _ => {}
    }
    v
}

/// Runs `cases` generated inputs through `check`: one in `random_one_in` is
/// random bytes, the others a valid message (`valid(r, kind)`, kind 0 to 3),
/// left whole one time in four and spoiled the others. One case in eight is
/// served one byte per read, the others in chunks of random size. Returns
/// how many `check` counted as accepted.
pub fn run(
    r: &mut Rng,
    cases: usize,
    random_one_in: usize,
    mut valid: impl FnMut(&mut Rng, usize) -> Vec<u8>,
    mut check: impl FnMut(&[u8], usize) -> usize,
) -> usize {
    let mut accepted = 0;
    for case in 0..cases {
        let data = match r.below(random_one_in) {
            0 => {
                let n = r.below(600);
                r.bytes(n)
            }
            k => {
                let v = valid(r, k % 4);
                if r.below(4) == 0 {
                    v
                } else {
                    mutate(r, v)
                }
            }
        };
        let chunk = if case % 8 == 0 { 1 } else { 1 + r.below(700) };
        accepted += check(&data, chunk);
    }
    accepted
}
