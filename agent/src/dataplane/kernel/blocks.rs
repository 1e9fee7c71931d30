//! What the rule walk reads before a rule: each slot's [`RuleHead`] and, per 64 slots, a
//! [`RuleBlock`] summing up the heads of every slot a packet may walk there. A table's
//! heads and blocks are written with its rules, before the endpoint's entry points at it.
//!
//! A block covers slots of whichever tables share it, so rewriting it needs their heads
//! too: [`BlockIndex`] keeps the heads this agent wrote, and reads a block's heads back
//! from the kernel the first time it touches one (slots an earlier agent wrote).

use std::collections::HashMap;

use aya::maps::Array;
use fedwall_common::policy::{
    RULE_BLOCK_SLOTS, RULE_BLOCKS_MAP, RULE_HEADS_MAP, RuleBlock, RuleEntry, RuleHead, TableRef,
};

use super::tables::RangeAllocator;
use super::{KernelDataplane, map_err};
use crate::dataplane::DataplaneError;

const SLOTS: usize = RULE_BLOCK_SLOTS as usize;

/// The heads of the rules map's slots, block by block, as far as this agent knows them.
#[derive(Debug, Default)]
pub struct BlockIndex {
    blocks: HashMap<u32, Box<[RuleHead; SLOTS]>>,
}

/// The blocks a table's slots fall in.
fn blocks_of(table: TableRef) -> std::ops::Range<u32> {
    if table.len == 0 {
        return 0..0;
    }
    table.start / RULE_BLOCK_SLOTS..(table.start + table.len - 1) / RULE_BLOCK_SLOTS + 1
}

impl BlockIndex {
    /// Blocks of `table` whose heads this agent has not seen yet.
    pub fn unknown(&self, table: TableRef) -> Vec<u32> {
        blocks_of(table)
            .filter(|block| !self.blocks.contains_key(block))
            .collect()
    }

    /// Takes in a block's heads as the kernel holds them.
    pub fn learn(&mut self, block: u32, heads: [RuleHead; SLOTS]) {
        self.blocks.insert(block, Box::new(heads));
    }

    /// Records the heads of `table`'s rules and returns the new summary of every block it
    /// touches: the heads of the slots `ranges` does not hold free (live tables, and
    /// released ones a packet may still be walking). Blocks must be known (see `unknown`).
    pub fn write(
        &mut self,
        table: TableRef,
        heads: &[RuleHead],
        ranges: &RangeAllocator,
    ) -> Vec<(u32, RuleBlock)> {
        for (offset, head) in heads.iter().enumerate() {
            let slot = table.start + offset as u32;
            let block = self
                .blocks
                .entry(slot / RULE_BLOCK_SLOTS)
                .or_insert_with(|| Box::new([RuleHead::default(); SLOTS]));
            block[(slot % RULE_BLOCK_SLOTS) as usize] = *head;
        }
        blocks_of(table)
            .map(|block| {
                let first = block * RULE_BLOCK_SLOTS;
                let heads = self.blocks.get(&block).map(|heads| {
                    heads
                        .iter()
                        .enumerate()
                        .filter(|(offset, _)| !ranges.is_free(first + *offset as u32))
                        .map(|(_, head)| head)
                });
                (block, RuleBlock::of(heads.into_iter().flatten()))
            })
            .collect()
    }
}

impl KernelDataplane {
    /// Writes the heads of a table's freshly written rules, then the blocks it touches.
    pub(super) fn write_heads_and_blocks(
        &mut self,
        table: TableRef,
        rules: &[RuleEntry],
    ) -> Result<(), DataplaneError> {
        let heads: Vec<RuleHead> = rules.iter().map(RuleHead::of).collect();
        let unknown = self.blocks.unknown(table);
        let mut head_map = Array::<_, RuleHead>::try_from(self.programs.map_mut(RULE_HEADS_MAP)?)
            .map_err(map_err(RULE_HEADS_MAP))?;
        for block in unknown {
            let mut read = [RuleHead::default(); SLOTS];
            for (offset, head) in read.iter_mut().enumerate() {
                *head = head_map
                    .get(&(block * RULE_BLOCK_SLOTS + offset as u32), 0)
                    .map_err(map_err(RULE_HEADS_MAP))?;
            }
            self.blocks.learn(block, read);
        }
        for (offset, head) in heads.iter().enumerate() {
            head_map
                .set(table.start + offset as u32, head, 0)
                .map_err(map_err(RULE_HEADS_MAP))?;
        }
        let summaries = self.blocks.write(table, &heads, &self.ranges);
        let mut block_map =
            Array::<_, RuleBlock>::try_from(self.programs.map_mut(RULE_BLOCKS_MAP)?)
                .map_err(map_err(RULE_BLOCKS_MAP))?;
        for (block, summary) in summaries {
            block_map
                .set(block, &summary, 0)
                .map_err(map_err(RULE_BLOCKS_MAP))?;
        }
        Ok(())
    }
}
