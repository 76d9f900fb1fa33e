//! A desired state in parts. The controller sends a generation as a
//! header (generation, number of parts), one frame per placement, and an
//! end marker, so however many stacks an agent runs no frame grows past
//! one placement. The agent puts the parts together here, bounded (part
//! count and bytes), and applies a generation only once it is whole: an
//! interrupted one (a newer generation starting, the connection ending)
//! is dropped, never partly applied.
//!
//! [`Assembler`] is a pure state machine, so every ordering is tested
//! without a connection.

use super::bounds::{MAX_DESIRED_BYTES, MAX_DESIRED_PARTS};
use super::messages::{ControllerMessage, DesiredHeader, DesiredPart, DesiredState, Placement};
use std::collections::HashSet;

/// One piece of a generation, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Begin(DesiredHeader),
    Part(Box<DesiredPart>),
    End { generation: u64 },
}

impl Piece {
    /// The piece a message is, or the message back when it is not one.
    pub fn of(message: ControllerMessage) -> Result<Piece, ControllerMessage> {
        match message {
            ControllerMessage::DesiredBegin(header) => Ok(Piece::Begin(header)),
            ControllerMessage::DesiredPart(part) => Ok(Piece::Part(part)),
            ControllerMessage::DesiredEnd { generation } => Ok(Piece::End { generation }),
            other => Err(other),
        }
    }
}

/// The messages that carry one generation, in order: header, one part per
/// placement, end.
pub fn pieces(
    generation: u64,
    placements: impl ExactSizeIterator<Item = Placement>,
) -> impl Iterator<Item = ControllerMessage> {
    let parts = u32::try_from(placements.len()).unwrap_or(u32::MAX);
    std::iter::once(ControllerMessage::DesiredBegin(DesiredHeader {
        generation,
        parts,
    }))
    .chain(placements.enumerate().map(move |(index, placement)| {
        ControllerMessage::DesiredPart(Box::new(DesiredPart {
            generation,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            placement,
        }))
    }))
    .chain(std::iter::once(ControllerMessage::DesiredEnd {
        generation,
    }))
}

/// What the assembler holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub parts: u32,
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            parts: MAX_DESIRED_PARTS,
            bytes: MAX_DESIRED_BYTES,
        }
    }
}

/// Why a generation was refused. The agent says so to the controller and
/// keeps the desired state it has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("generation {generation} announces {parts} placements; at most {max}")]
    TooManyParts {
        generation: u64,
        parts: u32,
        max: u32,
    },
    #[error("generation {generation} holds more than {max} bytes")]
    TooLarge { generation: u64, max: usize },
    #[error("part {index} of generation {generation}, which has {parts} parts")]
    OutOfRange {
        generation: u64,
        index: u32,
        parts: u32,
    },
    #[error("part {index} of generation {generation} sent twice")]
    Duplicate { generation: u64, index: u32 },
    #[error("configuration {flag} of stack {stack_id} placed twice in generation {generation}")]
    DuplicateSlot {
        generation: u64,
        stack_id: String,
        flag: String,
    },
    #[error("generation {generation} ended with {missing} of its {parts} parts missing")]
    Missing {
        generation: u64,
        missing: u32,
        parts: u32,
    },
    #[error("a piece of generation {generation}, which was never begun")]
    NotBegun { generation: u64 },
}

impl AssemblyError {
    /// The generation refused.
    pub fn generation(&self) -> u64 {
        match self {
            AssemblyError::TooManyParts { generation, .. }
            | AssemblyError::TooLarge { generation, .. }
            | AssemblyError::OutOfRange { generation, .. }
            | AssemblyError::Duplicate { generation, .. }
            | AssemblyError::DuplicateSlot { generation, .. }
            | AssemblyError::Missing { generation, .. }
            | AssemblyError::NotBegun { generation } => *generation,
        }
    }
}

/// What a piece did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A generation began; `dropped` is the unfinished one it replaced.
    Started { dropped: Option<u64> },
    /// A part was taken; the generation is not whole yet.
    Pending,
    /// The generation is whole, its placements in part order.
    Complete(DesiredState),
    /// The generation is refused (said once; its later pieces are ignored).
    Refused(AssemblyError),
    /// A piece of a generation already refused.
    Ignored,
}

/// A generation being put together.
#[derive(Debug)]
struct Partial {
    generation: u64,
    parts: Vec<Option<Placement>>,
    slots: HashSet<(String, String)>,
    bytes: usize,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Assembling(Partial),
    Refused(u64),
}

/// Puts generations together from their pieces; one per session, so a
/// connection ending drops whatever was unfinished.
#[derive(Debug, Default)]
pub struct Assembler {
    limits: Limits,
    state: State,
}

impl Assembler {
    /// An assembler holding at most `limits`.
    pub fn new(limits: Limits) -> Assembler {
        Assembler {
            limits,
            state: State::Idle,
        }
    }

    /// The generation being put together, if any.
    pub fn assembling(&self) -> Option<u64> {
        match &self.state {
            State::Assembling(partial) => Some(partial.generation),
            _ => None,
        }
    }

    /// Takes the next piece.
    pub fn step(&mut self, piece: Piece) -> Outcome {
        match piece {
            Piece::Begin(header) => self.begin(header),
            Piece::Part(part) => self.part(part),
            Piece::End { generation } => self.end(generation),
        }
    }

    fn refuse(&mut self, error: AssemblyError) -> Outcome {
        self.state = State::Refused(error.generation());
        Outcome::Refused(error)
    }

    fn begin(&mut self, header: DesiredHeader) -> Outcome {
        let dropped = self.assembling();
        if header.parts > self.limits.parts {
            return self.refuse(AssemblyError::TooManyParts {
                generation: header.generation,
                parts: header.parts,
                max: self.limits.parts,
            });
        }
        let count = usize::try_from(header.parts).unwrap_or(usize::MAX);
        self.state = State::Assembling(Partial {
            generation: header.generation,
            parts: (0..count).map(|_| None).collect(),
            slots: HashSet::new(),
            bytes: 0,
        });
        Outcome::Started { dropped }
    }

    fn part(&mut self, part: Box<DesiredPart>) -> Outcome {
        let generation = part.generation;
        let partial = match &mut self.state {
            State::Assembling(partial) if partial.generation == generation => partial,
            State::Refused(refused) if *refused == generation => return Outcome::Ignored,
            _ => return self.refuse(AssemblyError::NotBegun { generation }),
        };
        let parts = u32::try_from(partial.parts.len()).unwrap_or(u32::MAX);
        let index = part.index;
        let error = match usize::try_from(index)
            .ok()
            .and_then(|i| partial.parts.get_mut(i))
        {
            None => AssemblyError::OutOfRange {
                generation,
                index,
                parts,
            },
            Some(Some(_)) => AssemblyError::Duplicate { generation, index },
            Some(cell) => {
                let DesiredPart { placement, .. } = *part;
                let bytes = partial.bytes.saturating_add(placement.text_bytes());
                let slot = (placement.stack_id.clone(), placement.flag.clone());
                if bytes > self.limits.bytes {
                    AssemblyError::TooLarge {
                        generation,
                        max: self.limits.bytes,
                    }
                } else if partial.slots.contains(&slot) {
                    AssemblyError::DuplicateSlot {
                        generation,
                        stack_id: slot.0,
                        flag: slot.1,
                    }
                } else {
                    partial.bytes = bytes;
                    partial.slots.insert(slot);
                    *cell = Some(placement);
                    return Outcome::Pending;
                }
            }
        };
        self.refuse(error)
    }

    fn end(&mut self, generation: u64) -> Outcome {
        match std::mem::take(&mut self.state) {
            State::Assembling(partial) if partial.generation == generation => {
                let parts = u32::try_from(partial.parts.len()).unwrap_or(u32::MAX);
                let placements: Vec<Placement> = partial.parts.into_iter().flatten().collect();
                let have = u32::try_from(placements.len()).unwrap_or(u32::MAX);
                if have < parts {
                    return self.refuse(AssemblyError::Missing {
                        generation,
                        missing: parts - have,
                        parts,
                    });
                }
                Outcome::Complete(DesiredState {
                    generation,
                    placements,
                })
            }
            State::Refused(refused) if refused == generation => Outcome::Ignored,
            _ => self.refuse(AssemblyError::NotBegun { generation }),
        }
    }
}

#[cfg(test)]
mod tests;
