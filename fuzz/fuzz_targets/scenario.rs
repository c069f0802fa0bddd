//! Scenario files (`loader run`) on any text: parsing never panics, and a scenario
//! that parses can be planned at any time scale without panicking (its user profile
//! is a finite count, its think bounds and durations are durations).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use loader::run::scenario::{Injection, Scenario, fill, scaled};

fuzz_target!(|text: &str| {
    let Ok(scenario) = Scenario::parse(text) else {
        return;
    };
    assert!(!scenario.requests.is_empty());
    scenario.think.bounds().expect("checked by parse");
    let _ = scenario.injection.peak_users();
    let row = BTreeMap::from([("UUID".to_owned(), "x".to_owned())]);
    for step in &scenario.requests {
        let _ = fill(&step.path, &row);
    }
    for scale in [1.0, 1e-9, 0.001, 0.5, 60.0, 1e9] {
        match &scenario.injection {
            Injection::ConstantRate { during, .. } => {
                let _ = scaled(during, scale);
            }
            closed => {
                let Ok(profile) = closed.profile(scale) else {
                    continue;
                };
                for t in [0.0, 0.05, 1.0, 59.9, 3600.0, 1e12] {
                    let _ = profile(t);
                }
            }
        }
    }
});
