//! `ricochet simulate`: the herd simulator's results and its plot, through the library API that
//! the CLI prints (`--strategy all --format json` is one `result_json` line per strategy).
//!
//! `RICOCHET_WRITE_DOCS=1 cargo test -p ricochet-cli --test cli_simulate` also regenerates
//! `docs/herd.svg`, the README's picture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ricochet_cli::simulate::{
    result_json, simulate, write_svg, SimModel, SimOptions, SimResult, SimStrategy,
};

/// `--strategy all --format json`: every strategy's JSON object, keyed by name.
fn all_strategies(opts: &SimOptions) -> (Vec<SimResult>, BTreeMap<String, serde_json::Value>) {
    let results: Vec<SimResult> = SimStrategy::ALL
        .iter()
        .map(|&s| simulate(s, opts, None))
        .collect();
    let json = results
        .iter()
        .map(|r| {
            let line = result_json(r);
            let name = line["strategy"]
                .as_str()
                .expect("strategy name")
                .to_string();
            (name, line)
        })
        .collect();
    (results, json)
}

fn field(json: &BTreeMap<String, serde_json::Value>, strategy: &str, key: &str) -> u64 {
    json[strategy][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{strategy}.{key} in {:?}", json[strategy]))
}

#[test]
fn occ_reproduces_the_studys_ranking() {
    let opts = SimOptions {
        clients: 300,
        model: SimModel::Occ,
        seed: 1,
        capacity_per_bucket: None,
    };
    let (_, json) = all_strategies(&opts);
    assert_eq!(json.len(), SimStrategy::ALL.len(), "one line per strategy");
    for line in json.values() {
        let keys: BTreeSet<&str> = line
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "calls",
                "clients",
                "completion_s",
                "gave_up",
                "peak_per_slot",
                "strategy"
            ])
        );
        assert_eq!(line["clients"], 300);
    }
    let calls = |s: SimStrategy| field(&json, s.name(), "calls");
    let peak = |s: SimStrategy| field(&json, s.name(), "peak_per_slot");
    let table: Vec<_> = SimStrategy::ALL
        .iter()
        .map(|&s| (s.name(), calls(s), peak(s)))
        .collect();
    for other in SimStrategy::ALL
        .into_iter()
        .filter(|&s| s != SimStrategy::None)
    {
        assert!(
            calls(SimStrategy::None) > calls(other),
            "no-jitter exponential makes the most calls: {table:?}"
        );
    }
    assert!(
        calls(SimStrategy::Full) < calls(SimStrategy::None),
        "{table:?}"
    );
    for other in SimStrategy::ALL
        .into_iter()
        .filter(|&s| s != SimStrategy::Slots)
    {
        assert!(
            peak(SimStrategy::Slots) < peak(other),
            "slots has the lowest peak per slot: {table:?}"
        );
    }
    for s in SimStrategy::ALL {
        assert_eq!(field(&json, s.name(), "gave_up"), 0, "{table:?}");
    }
}

#[test]
fn capacity_slots_flatten_the_herd_and_nobody_gives_up() {
    let opts = SimOptions {
        clients: 1000,
        ..SimOptions::default()
    };
    let (results, json) = all_strategies(&opts);
    let peak = |s: SimStrategy| field(&json, s.name(), "peak_per_slot");
    let gave_up = |s: SimStrategy| field(&json, s.name(), "gave_up");
    let table: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r.strategy,
                r.calls,
                r.peak_per_slot,
                r.gave_up,
                r.completion_s,
            )
        })
        .collect();
    for other in SimStrategy::ALL
        .into_iter()
        .filter(|&s| s != SimStrategy::Slots)
    {
        assert!(peak(SimStrategy::Slots) < peak(other), "{table:?}");
    }
    assert_eq!(gave_up(SimStrategy::Slots), 0, "{table:?}");
    assert!(gave_up(SimStrategy::None) > 0, "{table:?}");
}

#[test]
fn the_same_seed_gives_the_same_numbers() {
    let opts = SimOptions {
        clients: 200,
        model: SimModel::Occ,
        seed: 9,
        capacity_per_bucket: None,
    };
    let a = simulate(SimStrategy::Decorrelated, &opts, None);
    assert_eq!(a, simulate(SimStrategy::Decorrelated, &opts, None));
    let other_seed = SimOptions { seed: 10, ..opts };
    assert_ne!(a, simulate(SimStrategy::Decorrelated, &other_seed, None));
}

#[test]
fn progress_ends_with_every_client_done() {
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |done: u64| seen.borrow_mut().push(done);
    let opts = SimOptions {
        clients: 500,
        ..SimOptions::default()
    };
    simulate(SimStrategy::Full, &opts, Some(&record));
    let seen = seen.into_inner();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&500));
    assert!(
        seen.len() > 10 && seen.len() <= 101,
        "{} updates",
        seen.len()
    );
}

/// Attribute `name` of `node` parsed as a number list length (SVG `points="x,y x,y …"`).
fn point_count(node: roxmltree::Node<'_, '_>) -> usize {
    node.attribute("points")
        .map_or(0, |p| p.split_whitespace().count())
}

#[test]
fn the_plot_is_svg_with_one_line_per_strategy_in_each_panel() {
    let opts = SimOptions {
        clients: 300,
        ..SimOptions::default()
    };
    let results: Vec<SimResult> = SimStrategy::ALL
        .iter()
        .map(|&s| simulate(s, &opts, None))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("herd.svg");
    write_svg(&path, &results, "300 clients").expect("svg written");
    let text = std::fs::read_to_string(&path).expect("svg read");
    let doc = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");

    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    assert!(texts.contains(&"300 clients"), "title: {texts:?}");
    for axis in [
        "time since the herd started (s, log scale)",
        "calls per slot",
        "clients succeeded",
    ] {
        assert!(texts.contains(&axis), "axis label {axis:?}: {texts:?}");
    }
    for s in SimStrategy::ALL {
        let legend = texts.iter().filter(|&&t| t == s.name()).count();
        assert_eq!(legend, 1, "{} in the key: {texts:?}", s.name());
    }

    // Data lines have many points; the key's samples have two. Each strategy's colour draws one
    // data line per panel.
    let mut lines_per_colour: BTreeMap<&str, usize> = BTreeMap::new();
    for line in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
        if point_count(line) > 2 {
            let stroke = line.attribute("stroke").expect("stroked line");
            *lines_per_colour.entry(stroke).or_default() += 1;
        }
    }
    assert_eq!(
        lines_per_colour.len(),
        SimStrategy::ALL.len(),
        "{lines_per_colour:?}"
    );
    assert!(
        lines_per_colour.values().all(|&n| n == 2),
        "{lines_per_colour:?}"
    );
}

#[test]
fn plotting_nothing_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = write_svg(&dir.path().join("x.svg"), &[], "none").expect_err("no results");
    assert_eq!(err.to_string(), "no simulation results to plot");
}

/// Regenerates the README's picture: `RICOCHET_WRITE_DOCS=1`.
#[test]
fn docs_picture() {
    if std::env::var_os("RICOCHET_WRITE_DOCS").is_none() {
        return;
    }
    let opts = SimOptions {
        clients: 1000,
        ..SimOptions::default()
    };
    let results: Vec<SimResult> = SimStrategy::ALL
        .iter()
        .map(|&s| simulate(s, &opts, None))
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/herd.svg");
    std::fs::create_dir_all(path.parent().expect("docs dir")).expect("docs dir");
    let title = format!(
        "1000 clients, a server taking {} calls per 100 ms (simulate --model capacity)",
        opts.effective_capacity()
    );
    write_svg(&path, &results, &title).expect("docs/herd.svg written");
}
