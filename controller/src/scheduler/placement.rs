//! Placement: which agents run each configuration. Pure functions, so the
//! rules are tested without a store or a network.
//!
//! Rules: a configuration runs only on agents of its pool (resolved when
//! its version was stored); an agent pinned at enrollment runs only its pinned configuration;
//! an unpinned agent runs any configuration whose `provision.instance_type`
//! (when set) equals its `instance_type` label. Existing assignments stay
//! while their agent is eligible (no needless moves); missing slots go to
//! agents pinned to that configuration first, then to the least loaded.
//!
//! A draining agent (its VM is going, or an operator is emptying it) keeps
//! no assignment and takes no new one. Slots that leave a draining agent go
//! to on-demand agents first (`lifecycle=on-demand`, then agents without a
//! lifecycle label, then spot agents), and agents the cloud flagged at risk
//! come last for any new slot.
//!
//! An agent takes no more than its desired state may hold ([`Room`]: the
//! wire's part and byte bounds, which the agent enforces), and a placement
//! too large for one frame goes nowhere, so no stack can make another
//! stack's desired state undeliverable.

use crate::store::Pin;
use std::collections::{BTreeMap, HashMap};

/// A configuration's demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub stack_id: String,
    pub flag: String,
    pub count: usize,
    /// `provision.instance_type`, unless absent or `${computed}`.
    pub instance_type: Option<String>,
    /// The pool whose agents may run it.
    pub pool: String,
    /// The bytes of text one placement of it carries
    /// (`Placement::text_bytes`).
    pub bytes: usize,
}

/// What one agent's desired state may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Placements.
    pub parts: usize,
    /// Bytes of text over all placements.
    pub bytes: usize,
    /// Bytes of text of one placement (what fits in one frame).
    pub part_bytes: usize,
}

/// Placements and bytes an agent already holds.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    parts: usize,
    bytes: usize,
}

impl Room {
    fn fits(&self, load: Option<&Load>, want: &Want) -> bool {
        let load = load.copied().unwrap_or_default();
        want.bytes <= self.part_bytes
            && load.parts < self.parts
            && load.bytes.saturating_add(want.bytes) <= self.bytes
    }
}

/// What placement needs to know of an agent.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub agent_id: String,
    pub pin: Option<Pin>,
    /// The pool it was enrolled into.
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    /// May keep the placements it has (connected, or lost for less than
    /// the re-placement delay).
    pub eligible: bool,
    /// May take new placements (connected, not draining).
    pub accepting: bool,
    /// Being drained: keeps nothing, its slots move.
    pub draining: bool,
    /// The cloud recommended moving work off it (rebalance).
    pub at_risk: bool,
}

impl Candidate {
    /// Whether this agent may run `want` at all: same pool, and its pin
    /// or its labels fit.
    pub fn matches(&self, want: &Want) -> bool {
        if self.pool != want.pool {
            return false;
        }
        match &self.pin {
            Some(pin) => pin.stack_id == want.stack_id && pin.flag == want.flag,
            None => want
                .instance_type
                .as_ref()
                .is_none_or(|wanted| self.labels.get("instance_type") == Some(wanted)),
        }
    }

    /// 0 for on-demand, 1 for unknown, 2 for spot: the order to refill
    /// a slot leaving a VM the cloud takes back.
    fn spot_rank(&self) -> u8 {
        match self.labels.get("lifecycle").map(String::as_str) {
            Some("on-demand") => 0,
            Some("spot") => 2,
            _ => 1,
        }
    }

    fn pinned_to(&self, want: &Want) -> bool {
        self.pin
            .as_ref()
            .is_some_and(|pin| pin.stack_id == want.stack_id && pin.flag == want.flag)
    }
}

/// Key of an assignment: (stack id, flag).
pub type Slot = (String, String);

/// Computes the assignment of every wanted configuration, starting from
/// `current`, within `room` per agent. Configurations not in `wants` get
/// no agents.
pub fn place<'a>(
    wants: &[Want],
    agents: &'a [Candidate],
    current: &HashMap<Slot, Vec<String>>,
    room: Room,
) -> HashMap<Slot, Vec<String>> {
    let by_id: HashMap<&'a str, &'a Candidate> =
        agents.iter().map(|a| (a.agent_id.as_str(), a)).collect();
    let mut load: HashMap<&'a str, Load> = HashMap::new();
    let take = |load: &mut HashMap<&'a str, Load>, id: &str, want: &Want| {
        if let Some(agent) = by_id.get(id) {
            let entry = load.entry(agent.agent_id.as_str()).or_default();
            entry.parts += 1;
            entry.bytes = entry.bytes.saturating_add(want.bytes);
        }
    };
    let mut result: HashMap<Slot, Vec<String>> = HashMap::new();
    // Keep what is still valid (and still fits).
    for want in wants {
        let slot = (want.stack_id.clone(), want.flag.clone());
        let mut kept: Vec<String> = Vec::new();
        for id in current.get(&slot).into_iter().flatten() {
            let valid = by_id
                .get(id.as_str())
                .is_some_and(|agent| agent.eligible && !agent.draining && agent.matches(want));
            if valid && kept.len() < want.count && room.fits(load.get(id.as_str()), want) {
                take(&mut load, id, want);
                kept.push(id.clone());
            }
        }
        result.insert(slot, kept);
    }
    // Fill what is missing.
    for want in wants {
        let slot = (want.stack_id.clone(), want.flag.clone());
        let assigned = result.get(&slot).map_or(0, Vec::len);
        if assigned >= want.count {
            continue;
        }
        let taken: Vec<String> = result.get(&slot).cloned().unwrap_or_default();
        let leaving_drained = current
            .get(&slot)
            .into_iter()
            .flatten()
            .any(|id| by_id.get(id.as_str()).is_some_and(|agent| agent.draining));
        let mut candidates: Vec<&Candidate> = agents
            .iter()
            .filter(|a| a.accepting && a.matches(want) && !taken.contains(&a.agent_id))
            .filter(|a| room.fits(load.get(a.agent_id.as_str()), want))
            .collect();
        candidates.sort_by_key(|a| {
            (
                !a.pinned_to(want),
                if leaving_drained { a.spot_rank() } else { 0 },
                a.at_risk,
                load.get(a.agent_id.as_str()).map_or(0, |l| l.parts),
                a.agent_id.clone(),
            )
        });
        let chosen: Vec<String> = candidates
            .into_iter()
            .take(want.count - assigned)
            .map(|a| a.agent_id.clone())
            .collect();
        for id in &chosen {
            take(&mut load, id, want);
        }
        result.entry(slot).or_default().extend(chosen);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, pin: Option<(&str, &str)>, instance_type: Option<&str>) -> Candidate {
        Candidate {
            agent_id: id.into(),
            pin: pin.map(|(s, f)| Pin {
                stack_id: s.into(),
                flag: f.into(),
            }),
            pool: "default".into(),
            labels: instance_type
                .map(|t| BTreeMap::from([("instance_type".to_owned(), t.to_owned())]))
                .unwrap_or_default(),
            eligible: true,
            accepting: true,
            draining: false,
            at_risk: false,
        }
    }

    fn with_lifecycle(mut agent: Candidate, lifecycle: &str) -> Candidate {
        agent
            .labels
            .insert("lifecycle".to_owned(), lifecycle.to_owned());
        agent
    }

    fn want(stack: &str, flag: &str, count: usize, instance_type: Option<&str>) -> Want {
        Want {
            stack_id: stack.into(),
            flag: flag.into(),
            count,
            instance_type: instance_type.map(Into::into),
            pool: "default".into(),
            bytes: 100,
        }
    }

    /// Far more room than any test fills.
    const ROOM: Room = Room {
        parts: 1000,
        bytes: 1 << 30,
        part_bytes: 1 << 20,
    };

    fn slot(stack: &str, flag: &str) -> Slot {
        (stack.into(), flag.into())
    }

    #[test]
    fn pinned_first_then_matching_then_spread() {
        let agents = vec![
            agent("a", None, Some("t2.micro")),
            agent("b", None, Some("m3.medium")),
            agent("c", Some(("s1", "web")), None),
            agent("d", None, Some("t2.micro")),
        ];
        let wants = vec![
            want("s1", "web", 2, Some("t2.micro")),
            want("s2", "db", 2, None),
        ];
        let placed = place(&wants, &agents, &HashMap::new(), ROOM);
        assert_eq!(placed[&slot("s1", "web")], ["c", "a"]);
        // s2 takes any unpinned agent, least loaded first.
        assert_eq!(placed[&slot("s2", "db")], ["b", "d"]);
    }

    #[test]
    fn existing_assignments_stay_and_lost_ones_move() {
        let mut agents = vec![
            agent("a", None, None),
            agent("b", None, None),
            agent("c", None, None),
        ];
        let wants = vec![want("s", "f", 2, None)];
        let current = HashMap::from([(slot("s", "f"), vec!["c".to_owned(), "b".to_owned()])]);
        assert_eq!(
            place(&wants, &agents, &current, ROOM)[&slot("s", "f")],
            ["c", "b"]
        );
        agents[2].eligible = false;
        agents[2].accepting = false;
        assert_eq!(
            place(&wants, &agents, &current, ROOM)[&slot("s", "f")],
            ["b", "a"]
        );
        // A lost agent still inside the delay keeps its slot but takes no new one.
        agents[2].eligible = true;
        assert_eq!(
            place(&wants, &agents, &current, ROOM)[&slot("s", "f")],
            ["c", "b"]
        );
    }

    #[test]
    fn shrinking_and_shortage() {
        let agents = vec![
            agent("a", None, None),
            agent("b", Some(("other", "x")), None),
        ];
        let current = HashMap::from([(slot("s", "f"), vec!["a".to_owned()])]);
        assert!(
            place(&[want("s", "f", 0, None)], &agents, &current, ROOM)[&slot("s", "f")].is_empty()
        );
        let placed = place(&[want("s", "f", 3, None)], &agents, &HashMap::new(), ROOM);
        assert_eq!(
            placed[&slot("s", "f")],
            ["a"],
            "pinned elsewhere is not a candidate"
        );
    }

    #[test]
    fn a_draining_agent_keeps_nothing_and_its_slots_go_on_demand_first() {
        let mut agents = vec![
            with_lifecycle(agent("a-spot", None, None), "spot"),
            with_lifecycle(agent("b-spot", None, None), "spot"),
            agent("c-plain", None, None),
            with_lifecycle(agent("d-od", None, None), "on-demand"),
        ];
        let current = HashMap::from([
            (slot("s", "web"), vec!["a-spot".to_owned()]),
            (slot("s", "db"), vec!["c-plain".to_owned()]),
        ]);
        let wants = vec![want("s", "web", 1, None), want("s", "db", 1, None)];
        assert_eq!(
            place(&wants, &agents, &current, ROOM)[&slot("s", "web")],
            ["a-spot"]
        );
        agents[0].draining = true;
        agents[0].accepting = false;
        let placed = place(&wants, &agents, &current, ROOM);
        assert_eq!(placed[&slot("s", "web")], ["d-od"], "on-demand first");
        assert_eq!(placed[&slot("s", "db")], ["c-plain"], "others stay");
        // Without an on-demand agent: unknown lifecycle before spot.
        agents[3].accepting = false;
        agents[3].eligible = false;
        let placed = place(&wants, &agents, &current, ROOM);
        assert_eq!(placed[&slot("s", "web")], ["c-plain"]);
        // A new slot avoids an at-risk agent but takes spot or not alike.
        agents[2].at_risk = true;
        let placed = place(&[want("n", "x", 1, None)], &agents, &HashMap::new(), ROOM);
        assert_eq!(placed[&slot("n", "x")], ["b-spot"]);
    }

    #[test]
    fn a_configuration_never_lands_outside_its_pool() {
        let mut agents = vec![
            agent("a", None, None),
            agent("b", None, None),
            agent("c", Some(("s", "web")), None),
        ];
        agents[0].pool = "team-a".into();
        agents[2].pool = "team-b".into();
        let mut web = want("s", "web", 3, None);
        web.pool = "team-a".into();
        let placed = place(&[web.clone()], &agents, &HashMap::new(), ROOM);
        assert_eq!(
            placed[&slot("s", "web")],
            ["a"],
            "only team-a's agent; a pin from another pool does not count"
        );
        // An assignment kept from before moves off an agent of another pool.
        let current = HashMap::from([(slot("s", "web"), vec!["b".to_owned()])]);
        assert_eq!(
            place(&[web.clone()], &agents, &current, ROOM)[&slot("s", "web")],
            ["a"]
        );
        web.pool = "team-c".into();
        assert!(place(&[web], &agents, &current, ROOM)[&slot("s", "web")].is_empty());
    }

    #[test]
    fn an_agent_takes_no_more_than_its_desired_state_holds() {
        let sized = |stack: &str, bytes: usize| Want {
            bytes,
            ..want(stack, "web", 1, None)
        };
        let room = |parts: usize, bytes: usize| Room {
            parts,
            bytes,
            part_bytes: 1000,
        };
        let one = vec![agent("a", None, None)];
        let two = vec![agent("a", None, None), agent("b", None, None)];
        let on = |stacks: &[&str], id: &str| -> HashMap<Slot, Vec<String>> {
            stacks
                .iter()
                .map(|s| (slot(s, "web"), vec![id.to_owned()]))
                .collect()
        };
        type Case<'a> = (
            &'a str,
            Vec<Want>,
            &'a [Candidate],
            HashMap<Slot, Vec<String>>,
            Room,
            Vec<(&'a str, Vec<&'a str>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "past the part count, nowhere",
                vec![sized("s1", 10), sized("s2", 10), sized("s3", 10)],
                &one,
                HashMap::new(),
                room(2, 1000),
                vec![("s1", vec!["a"]), ("s2", vec!["a"]), ("s3", vec![])],
            ),
            (
                "past the bytes, nowhere",
                vec![sized("s1", 100), sized("s2", 100), sized("s3", 100)],
                &one,
                HashMap::new(),
                room(10, 250),
                vec![("s1", vec!["a"]), ("s2", vec!["a"]), ("s3", vec![])],
            ),
            (
                "too large for one frame, nowhere",
                vec![sized("big", 1001), sized("s1", 10)],
                &two,
                HashMap::new(),
                room(10, 1 << 20),
                vec![("big", vec![]), ("s1", vec!["a"])],
            ),
            (
                "a full agent is passed over",
                vec![sized("s1", 10), sized("s2", 10), sized("s3", 10)],
                &two,
                on(&["s1", "s2"], "a"),
                room(2, 1000),
                vec![("s1", vec!["a"]), ("s2", vec!["a"]), ("s3", vec!["b"])],
            ),
            (
                "a kept assignment past the room moves",
                vec![sized("s1", 10), sized("s2", 10), sized("s3", 10)],
                &two,
                on(&["s1", "s2", "s3"], "a"),
                room(2, 1000),
                vec![("s1", vec!["a"]), ("s2", vec!["a"]), ("s3", vec!["b"])],
            ),
        ];
        for (name, wants, agents, current, room, expected) in cases {
            let placed = place(&wants, agents, &current, room);
            for (stack, ids) in expected {
                assert_eq!(placed[&slot(stack, "web")], ids, "{name}: {stack}");
            }
        }
    }
}
