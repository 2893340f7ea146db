//! Mutations: an input made from a seed by a few random edits, as byte-level fuzzers do
//! (bit flips, bytes that matter to parsers, insertions, deletions, duplications, splices
//! from another seed, tokens of the input's language), with a size bound.

use fastrand::Rng;

/// The largest input made: larger inputs only cost time.
pub const MAX_INPUT: usize = 64 * 1024;

/// Bytes that change how parsers read what follows.
const SPECIAL: &[u8] = b"\0\n\r\t \"'\\{}[]:,-#&*!|>%=+?~@`<$\x7f\xff\xc3\xe2";

/// Makes inputs from `seeds` and `tokens` with `rng`.
#[derive(Debug)]
pub struct Mutator<'a> {
    seeds: &'a [&'a [u8]],
    tokens: &'a [&'a str],
    rng: Rng,
}

impl<'a> Mutator<'a> {
    pub fn new(seeds: &'a [&'a [u8]], tokens: &'a [&'a str], seed: u64) -> Self {
        Self {
            seeds,
            tokens,
            rng: Rng::with_seed(seed),
        }
    }

    /// The next input, written into `out`.
    pub fn next_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        if !self.seeds.is_empty() {
            out.extend_from_slice(self.seeds[self.rng.usize(..self.seeds.len())]);
        }
        // Mostly a few edits, now and then many: small changes keep the input valid enough
        // to get deep, large ones reach what no seed looks like.
        let edits = if self.rng.u8(..8) == 0 {
            self.rng.usize(1..64)
        } else {
            self.rng.usize(1..5)
        };
        for _ in 0..edits {
            self.edit(out);
        }
        out.truncate(MAX_INPUT);
    }

    fn edit(&mut self, out: &mut Vec<u8>) {
        let at = |rng: &mut Rng, out: &Vec<u8>| rng.usize(..=out.len());
        match self.rng.u8(..9) {
            0 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out[i] ^= 1 << self.rng.u8(..8);
            }
            1 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out[i] = SPECIAL[self.rng.usize(..SPECIAL.len())];
            }
            2 => {
                let i = at(&mut self.rng, out);
                let byte = SPECIAL[self.rng.usize(..SPECIAL.len())];
                out.insert(i, byte);
            }
            3 if !out.is_empty() => {
                let start = self.rng.usize(..out.len());
                let len = self.rng.usize(..=(out.len() - start).min(64));
                out.drain(start..start + len);
            }
            4 if !out.is_empty() => {
                let start = self.rng.usize(..out.len());
                let len = self.rng.usize(1..=(out.len() - start).min(256));
                let copy = out[start..start + len].to_vec();
                let i = at(&mut self.rng, out);
                for _ in 0..self.rng.usize(1..4) {
                    out.splice(i..i, copy.iter().copied());
                }
            }
            5 if !self.seeds.is_empty() => {
                let other = self.seeds[self.rng.usize(..self.seeds.len())];
                if !other.is_empty() {
                    let start = self.rng.usize(..other.len());
                    let len = self.rng.usize(1..=(other.len() - start).min(512));
                    let i = at(&mut self.rng, out);
                    out.splice(i..i, other[start..start + len].iter().copied());
                }
            }
            6 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out.truncate(i);
            }
            7 => {
                let i = at(&mut self.rng, out);
                let len = self.rng.usize(1..8);
                let random: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
                out.splice(i..i, random);
            }
            _ if !self.tokens.is_empty() => {
                let token = self.tokens[self.rng.usize(..self.tokens.len())];
                let i = at(&mut self.rng, out);
                out.splice(i..i, token.bytes());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_inputs() {
        let seeds: &[&[u8]] = &[b"steps:\n  a: { run: x }\n", b"{}"];
        let tokens = &["needs:", "["];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut one = Mutator::new(seeds, tokens, 7);
        let mut two = Mutator::new(seeds, tokens, 7);
        let mut differ = 0;
        for _ in 0..1000 {
            one.next_into(&mut a);
            two.next_into(&mut b);
            assert_eq!(a, b);
            assert!(a.len() <= MAX_INPUT);
            differ += usize::from(!seeds.contains(&a.as_slice()));
        }
        assert!(differ > 900, "inputs are mutated: {differ}");
    }
}
