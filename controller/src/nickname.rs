//! Stack nicknames: three random words ("clean sail demonstrate"), easier to
//! say across a room than `mo-5447820c870e1-ZgNTSRM8K-tk`.

use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brave", "bright", "calm", "clean", "clever", "cool", "crisp", "daring",
    "eager", "early", "fair", "fancy", "fast", "fresh", "gentle", "glad", "golden", "grand",
    "green", "happy", "hidden", "honest", "jolly", "keen", "kind", "light", "lively", "lucky",
    "mellow", "merry", "mighty", "modest", "noble", "patient", "plain", "polite", "proud", "quick",
    "quiet", "rapid", "ready", "rich", "royal", "shiny", "silent", "simple", "smart", "solid",
    "steady", "still", "strong", "sunny", "swift", "tidy", "true", "vast", "warm", "wise", "young",
    "zesty",
];

const NOUNS: &[&str] = &[
    "anchor", "arrow", "bay", "beacon", "breeze", "bridge", "brook", "canal", "cape", "cliff",
    "cloud", "coast", "comet", "cove", "crane", "dawn", "delta", "dune", "falcon", "field",
    "fjord", "forest", "gale", "garden", "glade", "harbor", "hill", "island", "lagoon", "lake",
    "lantern", "meadow", "mist", "moon", "oak", "ocean", "orbit", "pier", "pine", "planet", "reef",
    "ridge", "river", "sail", "shore", "sky", "spring", "star", "stone", "storm", "stream",
    "summit", "tide", "trail", "valley", "wave", "willow", "wind",
];

const VERBS: &[&str] = &[
    "answer",
    "arrive",
    "balance",
    "believe",
    "build",
    "carry",
    "climb",
    "collect",
    "compose",
    "connect",
    "create",
    "dance",
    "deliver",
    "demonstrate",
    "discover",
    "dream",
    "drift",
    "explore",
    "follow",
    "gather",
    "glide",
    "grow",
    "guide",
    "imagine",
    "inspire",
    "jump",
    "launch",
    "learn",
    "listen",
    "measure",
    "navigate",
    "observe",
    "paint",
    "promise",
    "reach",
    "remember",
    "repair",
    "rise",
    "roam",
    "sail",
    "shine",
    "sing",
    "steer",
    "travel",
    "trust",
    "wander",
    "welcome",
    "whisper",
    "wonder",
];

/// A fresh nickname: adjective, noun, verb.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let pick = |words: &[&'static str], rng: &mut rand::rngs::ThreadRng| {
        words.choose(rng).copied().unwrap_or("flotilla")
    };
    format!(
        "{} {} {}",
        pick(ADJECTIVES, &mut rng),
        pick(NOUNS, &mut rng),
        pick(VERBS, &mut rng)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn three_lowercase_words() {
        let name = super::generate();
        let words: Vec<&str> = name.split(' ').collect();
        assert_eq!(words.len(), 3, "{name}");
        assert!(words
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())));
    }
}
