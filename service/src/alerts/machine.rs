//! The state machine of one alert (one rule of one target), with hysteresis so
//! it never flaps: it raises once the condition has held in `raise_after`
//! rounds, and clears once the recovery has held in `clear_after` rounds.
//!
//! Each round's reading is a [`Condition`]. `Breach` is at or past the raise
//! threshold; `Healthy` is at or past the (stricter) clear threshold; in the
//! band between them, or without enough data, the reading is `Neutral`, which
//! neither counts nor resets. The opposite reading resets a count: a breach
//! while counting towards a clear starts that count over, and vice versa.

/// What one round says about a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Breach,
    Healthy,
    Neutral,
}

/// What a step of the machine decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Stay,
    Raise,
    Clear,
}

/// An alert's state; the count is of rounds towards the next transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    Idle { breaches: u32 },
    Raised { recoveries: u32 },
}

impl Default for Machine {
    fn default() -> Self {
        Machine::Idle { breaches: 0 }
    }
}

impl Machine {
    /// A machine already raised (restored after a restart).
    pub fn raised() -> Machine {
        Machine::Raised { recoveries: 0 }
    }

    pub fn is_raised(&self) -> bool {
        matches!(self, Machine::Raised { .. })
    }

    /// Takes in one round. `raise_after` and `clear_after` are at least 1.
    pub fn step(&mut self, condition: Condition, raise_after: u32, clear_after: u32) -> Step {
        match (*self, condition) {
            (Machine::Idle { breaches }, Condition::Breach) => {
                if breaches + 1 >= raise_after.max(1) {
                    *self = Machine::raised();
                    Step::Raise
                } else {
                    *self = Machine::Idle {
                        breaches: breaches + 1,
                    };
                    Step::Stay
                }
            }
            (Machine::Idle { .. }, Condition::Healthy) => {
                *self = Machine::Idle { breaches: 0 };
                Step::Stay
            }
            (Machine::Raised { recoveries }, Condition::Healthy) => {
                if recoveries + 1 >= clear_after.max(1) {
                    *self = Machine::default();
                    Step::Clear
                } else {
                    *self = Machine::Raised {
                        recoveries: recoveries + 1,
                    };
                    Step::Stay
                }
            }
            (Machine::Raised { .. }, Condition::Breach) => {
                *self = Machine::raised();
                Step::Stay
            }
            (_, Condition::Neutral) => Step::Stay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Condition::{Breach as B, Healthy as H, Neutral as N};
    use super::*;

    fn run(conditions: &[Condition], raise: u32, clear: u32) -> Vec<Step> {
        let mut m = Machine::default();
        conditions
            .iter()
            .map(|c| m.step(*c, raise, clear))
            .collect()
    }

    fn transitions(steps: &[Step]) -> Vec<(usize, Step)> {
        steps
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, s)| *s != Step::Stay)
            .collect()
    }

    #[test]
    fn raises_once_after_the_condition_holds_and_clears_once() {
        let steps = run(&[H, B, B, B, B, B, H, H, H, H], 3, 4);
        assert_eq!(
            transitions(&steps),
            vec![(3, Step::Raise), (9, Step::Clear)]
        );
    }

    #[test]
    fn a_value_hovering_at_the_threshold_never_flaps() {
        // Alternating breach/healthy: never three breaches before a reset.
        let flapping: Vec<Condition> = (0..100).map(|i| if i % 2 == 0 { B } else { H }).collect();
        assert!(transitions(&run(&flapping, 3, 3)).is_empty());
        // Once raised, alternating readings never clear it either.
        let mut m = Machine::raised();
        for c in &flapping {
            assert_eq!(m.step(*c, 3, 3), Step::Stay);
        }
        assert!(m.is_raised());
    }

    #[test]
    fn the_hysteresis_band_neither_counts_nor_resets() {
        // Inside the band (N) after a raise: no clear, however long.
        let mut steps = vec![B, B];
        steps.extend(std::iter::repeat_n(N, 50));
        let got = run(&steps, 2, 2);
        assert_eq!(transitions(&got), vec![(1, Step::Raise)]);
        // Breaches separated by band readings still add up...
        assert_eq!(
            transitions(&run(&[B, N, B, N, B], 3, 3)),
            vec![(4, Step::Raise)]
        );
        // ...but a healthy reading starts the count over.
        assert!(transitions(&run(&[B, B, H, B, B], 3, 3)).is_empty());
        // And a breach while recovering starts the recovery over.
        assert_eq!(
            transitions(&run(&[B, H, H, B, H, H, H], 1, 3)),
            vec![(0, Step::Raise), (6, Step::Clear)]
        );
    }

    #[test]
    fn thresholds_of_one_act_at_once() {
        assert_eq!(
            transitions(&run(&[B, H], 1, 1)),
            vec![(0, Step::Raise), (1, Step::Clear)]
        );
        assert_eq!(
            transitions(&run(&[B, H], 0, 0)),
            vec![(0, Step::Raise), (1, Step::Clear)]
        );
    }
}
