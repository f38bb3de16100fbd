use std::collections::BTreeMap;

use super::*;
use crate::sinks::testing::{T0, client_alert};

const S: i64 = 1_000_000_000;

/// An alert of `rule` for `entity`, its incident begun `start_s` seconds after
/// T0, reported at the end of a one-minute window begun `at_s` seconds after T0.
fn alert(
    rule: &str,
    entity: &[(&str, &str)],
    value: i64,
    start_s: i64,
    at_s: i64,
    state: State,
) -> Alert {
    let mut a = client_alert("0.0.0.0", state);
    a.rule_id = rule.into();
    a.entity = entity
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    a.value = json!(value);
    a.summary = format!("{value} from {}", entity[0].1);
    a.incident_start_ns = Some(T0 + start_s * S);
    a.window_start = rfc3339(T0 + at_s * S);
    a.window_end = rfc3339(T0 + (at_s + 60) * S);
    a.at_ns = T0 + (at_s + 60) * S;
    a
}

fn bot(i: usize, start_s: i64, state: State) -> Alert {
    let client = format!("198.51.100.{i}");
    let at = if state == State::Firing {
        start_s
    } else {
        start_s + 120
    };
    alert(
        "dos.expensive",
        &[("client.address", &client)],
        20 + i as i64,
        start_s,
        at,
        state,
    )
}

#[test]
fn a_botnet_of_one_rule_on_many_addresses_is_one_incident_with_its_members_counted() {
    let mut c = Correlator::default();
    // 200 addresses, their alerts spread over three minutes of windows
    let firing: Vec<Alert> = (0..200)
        .map(|i| bot(i, (i as i64 % 18) * 10, State::Firing))
        .collect();
    let updates = c.correlate(&firing);
    assert_eq!(updates.len(), 1, "{updates:?}");
    let inc = &updates[0];
    assert_eq!(inc.id, firing[0].identity(), "the lead's identity");
    assert_eq!(
        (inc.member_count, inc.open_members, inc.entity_count),
        (200, 200, 200)
    );
    assert_eq!(inc.members.len(), 10);
    assert_eq!(inc.not_listed(), 190);
    assert_eq!(
        inc.members[0].id,
        firing[0].identity(),
        "the lead stays listed first"
    );
    assert_eq!(inc.members[1].value, json!(219), "then the highest values");
    assert_eq!(inc.state, State::Firing);
    assert!(
        inc.summary()
            .ends_with("(one incident of 200 alerts on 200 entities: dos.expensive)"),
        "{}",
        inc.summary()
    );

    // members resolving change nothing to notify until the last one
    let resolved: Vec<Alert> = (0..200)
        .map(|i| bot(i, (i as i64 % 18) * 10, State::Resolved))
        .collect();
    let updates = c.correlate(&resolved[..199]);
    assert!(updates.is_empty(), "{updates:?}");
    let updates = c.correlate(&resolved[199..]);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state, State::Resolved);
    assert_eq!(
        updates[0].id,
        firing[0].identity(),
        "updates go to the same incident"
    );
    assert_eq!(updates[0].open_members, 0);
}

#[test]
fn related_rules_fold_on_a_shared_entity_value_or_a_named_one_and_others_stay_apart() {
    let mut c = Correlator::default();
    let brute = alert(
        "auth.brute_force",
        &[("client.address", "203.0.113.7")],
        40,
        0,
        0,
        State::Firing,
    );
    let takeover = alert(
        "auth.account_takeover",
        &[("client.address", "203.0.113.7"), ("user.name", "alice")],
        1,
        60,
        60,
        State::Firing,
    );
    let mut spray = alert(
        "auth.spraying_population",
        &[("service.name", "shop-auth")],
        90,
        30,
        30,
        State::Firing,
    );
    spray.summary = "90 accounts tried; top addresses 203.0.113.7, 198.51.100.2".into();
    let elsewhere = alert(
        "fraud.card_testing",
        &[("client.address", "192.0.2.44")],
        12,
        30,
        30,
        State::Firing,
    );
    let ids: Vec<String> = [&brute, &takeover, &spray, &elsewhere]
        .iter()
        .map(|a| c.take(a).incident)
        .collect();
    assert_eq!(ids[1], ids[0], "one address, two rules");
    assert_eq!(ids[2], ids[0], "the population alert names the address");
    assert_ne!(ids[3], ids[0], "another address and rule: another incident");
    assert_eq!(c.stats().opened, 2);
}

#[test]
fn a_related_alert_within_the_gap_opens_the_incident_again_and_after_it_a_new_one() {
    let mut c = Correlator::default();
    let first = bot(1, 0, State::Firing);
    let id = c.take(&first).incident;
    // resolved at T0 + 180 s
    let end = c
        .take(&bot(1, 0, State::Resolved))
        .update
        .expect("it resolves");
    assert_eq!(end.state, State::Resolved);
    // another address of the same rule four minutes later: the same incident, firing
    let again = c.take(&bot(2, 180 + 240, State::Firing));
    assert_eq!(again.incident, id);
    assert_eq!(again.update.expect("it opens again").state, State::Firing);
    c.take(&bot(2, 420, State::Resolved));
    // ten minutes after that: a new incident
    let later = c.take(&bot(3, 420 + 120 + 600, State::Firing));
    assert_ne!(later.incident, id);
}

#[test]
fn a_member_firing_again_changes_nothing_and_an_unknown_resolution_stands_alone() {
    let mut c = Correlator::default();
    let a = bot(1, 0, State::Firing);
    assert!(c.take(&a).update.is_some());
    let mut confirmed = a.clone();
    confirmed.value = json!(99);
    assert_eq!(
        c.take(&confirmed).update,
        None,
        "the close confirming an early firing"
    );

    let stranger = bot(7, 0, State::Resolved);
    let t = c.take(&stranger);
    assert_eq!(t.incident, stranger.identity());
    let inc = t.update.expect("reported");
    assert_eq!((inc.state, inc.member_count), (State::Resolved, 1));
}

#[test]
fn the_same_alerts_fold_the_same_way_every_time() {
    let alerts: Vec<Alert> = (0..50)
        .map(|i| {
            bot(
                i % 7,
                (i as i64) * 40,
                if i % 3 == 2 {
                    State::Resolved
                } else {
                    State::Firing
                },
            )
        })
        .collect();
    let run = || {
        let mut c = Correlator::default();
        alerts.iter().map(|a| c.take(a)).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn bounds_forget_the_oldest_incident_and_count_unfollowed_members() {
    let mut c = Correlator::new(Config {
        max_incidents: 2,
        max_members: 3,
        ..Config::default()
    });
    for (i, rule) in ["a.one", "b.two", "c.three"].iter().enumerate() {
        let host = format!("host-{i}");
        c.take(&alert(
            rule,
            &[("host.name", &host)],
            1,
            0,
            0,
            State::Firing,
        ));
    }
    assert_eq!(c.kept(), 2);
    assert_eq!(c.stats().forgotten, 1);
    // the forgotten incident's member resolves as an incident of its own
    let gone = alert(
        "a.one",
        &[("host.name", "host-0")],
        1,
        0,
        60,
        State::Resolved,
    );
    assert_eq!(c.take(&gone).update.map(|i| i.member_count), Some(1));
    // two followed members left; a third and fourth: one is not followed
    c.take(&alert(
        "b.two",
        &[("host.name", "host-9")],
        1,
        0,
        0,
        State::Firing,
    ));
    c.take(&alert(
        "b.two",
        &[("host.name", "host-8")],
        1,
        0,
        0,
        State::Firing,
    ));
    assert_eq!(c.stats().unfollowed, 1);
}

#[test]
fn an_incident_as_json_is_its_lead_alert_with_its_members() {
    let mut c = Correlator::default();
    let alerts: Vec<Alert> = (0..12).map(|i| bot(i, 0, State::Firing)).collect();
    let inc = c.correlate(&alerts).pop().expect("an incident");
    let v = inc.to_json();
    assert_eq!(v["id"], json!(alerts[0].identity()));
    assert_eq!(v["rule_id"], "dos.expensive");
    assert_eq!(v["entity"]["client.address"], "198.51.100.0");
    assert_eq!(v["state"], "firing");
    assert_eq!(v["member_count"], 12);
    assert_eq!(v["entity_count"], 12);
    assert_eq!(v["members"].as_array().map(Vec::len), Some(10));
    assert_eq!(v["members_not_listed"], 2);
    assert_eq!(v["rules"], json!(["dos.expensive"]));
    assert_eq!(v["incident_start"], "2026-01-15T10:00:00Z");
    assert_eq!(v["incident_end"], "2026-01-15T10:01:00Z");
    assert!(
        inc.member_lines().ends_with("... and 2 more"),
        "{}",
        inc.member_lines()
    );
}

#[test]
fn the_viewer_keeps_each_incident_once_in_its_latest_state_within_its_cap() {
    let mut recent = Recent::with_cap(2);
    for i in 0..5 {
        recent.take(&bot(i, 0, State::Firing));
    }
    recent.take(&alert(
        "fraud.card_testing",
        &[("client.address", "192.0.2.1")],
        9,
        0,
        0,
        State::Firing,
    ));
    recent.take(&alert(
        "auth.brute_force",
        &[("user.name", "bob")],
        9,
        0,
        0,
        State::Firing,
    ));
    let rules = |list: &Value| -> Vec<String> {
        list.as_array()
            .expect("an array")
            .iter()
            .filter_map(|i| i["rule_id"].as_str().map(String::from))
            .collect()
    };
    let list = recent.to_json(2);
    assert_eq!(
        rules(&list),
        ["fraud.card_testing", "auth.brute_force"],
        "{list}"
    );
    assert_eq!(rules(&recent.to_json(1)), ["auth.brute_force"]);
    assert_eq!(recent.incidents().len(), 2);
    let mut recent = Recent::with_cap(2);
    for i in 0..5 {
        recent.take(&bot(i, 0, State::Firing));
    }
    assert_eq!(recent.to_json(2)[0]["member_count"], 5);
    assert_eq!(recent.to_json(2).as_array().map(Vec::len), Some(1));
}
