use super::*;

fn placement(stack: &str, flag: &str, spec_bytes: usize) -> Placement {
    Placement {
        stack_id: stack.into(),
        flag: flag.into(),
        version_id: "v1".into(),
        spec_json: "x".repeat(spec_bytes),
        auth_token: String::new(),
        pool: "default".into(),
        policy: Default::default(),
        scoped_volumes: true,
        held: false,
    }
}

fn begin(generation: u64, parts: u32) -> Piece {
    Piece::Begin(DesiredHeader { generation, parts })
}

fn part(generation: u64, index: u32, stack: &str) -> Piece {
    Piece::Part(Box::new(DesiredPart {
        generation,
        index,
        placement: placement(stack, "Web01", 10),
    }))
}

fn end(generation: u64) -> Piece {
    Piece::End { generation }
}

/// The outcome of the last piece, and which stacks a completed generation
/// holds (in order).
fn run(limits: Limits, pieces: Vec<Piece>) -> (Outcome, Vec<Outcome>) {
    let mut assembler = Assembler::new(limits);
    let outcomes: Vec<Outcome> = pieces.into_iter().map(|p| assembler.step(p)).collect();
    let last = outcomes.last().cloned().unwrap_or(Outcome::Pending);
    (last, outcomes)
}

fn stacks(outcome: &Outcome) -> Option<(u64, Vec<String>)> {
    match outcome {
        Outcome::Complete(state) => Some((
            state.generation,
            state
                .placements
                .iter()
                .map(|p| p.stack_id.clone())
                .collect(),
        )),
        _ => None,
    }
}

#[test]
fn assembly_table() {
    let small = Limits {
        parts: 3,
        bytes: 100,
    };
    let cases: Vec<(&str, Limits, Vec<Piece>, Outcome)> = vec![
        (
            "empty generation",
            small,
            vec![begin(1, 0), end(1)],
            Outcome::Complete(DesiredState {
                generation: 1,
                placements: vec![],
            }),
        ),
        (
            "missing part",
            small,
            vec![begin(2, 2), part(2, 0, "a"), end(2)],
            Outcome::Refused(AssemblyError::Missing {
                generation: 2,
                missing: 1,
                parts: 2,
            }),
        ),
        (
            "duplicate part",
            small,
            vec![begin(2, 2), part(2, 1, "a"), part(2, 1, "b")],
            Outcome::Refused(AssemblyError::Duplicate {
                generation: 2,
                index: 1,
            }),
        ),
        (
            "the same configuration twice",
            small,
            vec![begin(2, 2), part(2, 0, "a"), part(2, 1, "a")],
            Outcome::Refused(AssemblyError::DuplicateSlot {
                generation: 2,
                stack_id: "a".into(),
                flag: "Web01".into(),
            }),
        ),
        (
            "index past the count",
            small,
            vec![begin(2, 2), part(2, 2, "a")],
            Outcome::Refused(AssemblyError::OutOfRange {
                generation: 2,
                index: 2,
                parts: 2,
            }),
        ),
        (
            "too many parts announced",
            small,
            vec![begin(3, 4)],
            Outcome::Refused(AssemblyError::TooManyParts {
                generation: 3,
                parts: 4,
                max: 3,
            }),
        ),
        (
            "too many bytes",
            small,
            vec![
                begin(3, 3),
                part(3, 0, "a"),
                Piece::Part(Box::new(DesiredPart {
                    generation: 3,
                    index: 1,
                    placement: placement("b", "Web01", 100),
                })),
            ],
            Outcome::Refused(AssemblyError::TooLarge {
                generation: 3,
                max: 100,
            }),
        ),
        (
            "a part without a header",
            small,
            vec![part(4, 0, "a")],
            Outcome::Refused(AssemblyError::NotBegun { generation: 4 }),
        ),
        (
            "an end without a header",
            small,
            vec![end(4)],
            Outcome::Refused(AssemblyError::NotBegun { generation: 4 }),
        ),
        (
            "a part of another generation",
            small,
            vec![begin(5, 1), part(4, 0, "a")],
            Outcome::Refused(AssemblyError::NotBegun { generation: 4 }),
        ),
        (
            "pieces of a refused generation are ignored",
            small,
            vec![begin(2, 1), part(2, 3, "a"), part(2, 0, "a")],
            Outcome::Ignored,
        ),
        (
            "and so is its end",
            small,
            vec![begin(2, 1), part(2, 3, "a"), end(2)],
            Outcome::Ignored,
        ),
        (
            "a newer generation interrupting",
            small,
            vec![begin(6, 2), part(6, 0, "a"), begin(7, 1)],
            Outcome::Started { dropped: Some(6) },
        ),
    ];
    for (name, limits, pieces, want) in cases {
        let (last, all) = run(limits, pieces);
        assert_eq!(last, want, "{name}: {all:?}");
    }
}

#[test]
fn parts_out_of_order_complete_in_index_order() {
    let (last, _) = run(
        Limits::default(),
        vec![
            begin(3, 3),
            part(3, 2, "c"),
            part(3, 0, "a"),
            part(3, 1, "b"),
            end(3),
        ],
    );
    assert_eq!(
        stacks(&last),
        Some((3, vec!["a".into(), "b".into(), "c".into()]))
    );
}

#[test]
fn an_interrupted_generation_is_never_applied() {
    // Generation 6 is cut short by 7; 7 completes alone, and a late piece
    // of 6 is refused rather than mixed in.
    let (last, all) = run(
        Limits::default(),
        vec![
            begin(6, 2),
            part(6, 0, "old"),
            begin(7, 1),
            part(7, 0, "new"),
            end(7),
        ],
    );
    assert_eq!(stacks(&last), Some((7, vec!["new".into()])), "{all:?}");
    let mut assembler = Assembler::default();
    assembler.step(begin(6, 2));
    assembler.step(part(6, 0, "old"));
    assembler.step(begin(7, 1));
    assert_eq!(assembler.assembling(), Some(7));
    assert_eq!(
        assembler.step(part(6, 1, "old")),
        Outcome::Refused(AssemblyError::NotBegun { generation: 6 })
    );
    assert_eq!(assembler.assembling(), None, "the refusal drops 7 too");
}

#[test]
fn after_a_refusal_the_next_generation_assembles() {
    let (last, all) = run(
        Limits::default(),
        vec![
            begin(2, 2),
            part(2, 0, "a"),
            end(2),
            begin(3, 1),
            part(3, 0, "a"),
            end(3),
        ],
    );
    assert!(matches!(
        all[2],
        Outcome::Refused(AssemblyError::Missing { .. })
    ));
    assert_eq!(stacks(&last), Some((3, vec!["a".into()])));
}

#[test]
fn pieces_round_trip_through_the_assembler() {
    let placements: Vec<Placement> = (0..20)
        .map(|i| placement(&format!("s{i}"), "Web01", 200 * 1024))
        .collect();
    let mut assembler = Assembler::default();
    let mut last = Outcome::Pending;
    let mut largest = 0;
    for message in pieces(9, placements.clone().into_iter()) {
        let bytes = crate::wire::frame::encode(&message).expect("encode");
        largest = largest.max(bytes.len());
        let back: ControllerMessage = crate::wire::frame::decode(&bytes).expect("decode");
        let piece = Piece::of(back).expect("a piece");
        last = assembler.step(piece);
    }
    assert!(
        largest < 201 * 1024,
        "one frame per placement: largest {largest} bytes"
    );
    assert_eq!(
        last,
        Outcome::Complete(DesiredState {
            generation: 9,
            placements,
        })
    );
}
