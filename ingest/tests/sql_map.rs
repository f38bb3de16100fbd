//! The documented SQL over the map columns works on DataFusion as the engine
//! uses it (docs/schema.md shows these queries).

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ingest::decode::decode_json;

#[tokio::test]
async fn attributes_map_access_in_sql() {
    let json = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/spans.json"),
    )
    .expect("fixture");
    let d = decode_json(&json).expect("decodes");
    let ctx = SessionContext::new();
    let table = MemTable::try_new(d.batch.schema(), vec![vec![d.batch]]).expect("table");
    ctx.register_table("spans", Arc::new(table))
        .expect("register");
    let run = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx
                .sql(sql)
                .await
                .expect("plans")
                .collect()
                .await
                .expect("runs");
            pretty_format_batches(&batches).expect("prints").to_string()
        }
    };
    let out = run("SELECT name, attributes['server.port'] AS port, resource_attributes['telemetry.sdk.language'] AS lang \
                   FROM spans WHERE attributes['tls'] = 'false'")
        .await;
    assert_eq!(
        out,
        "+------------------------+------+------+\n\
         | name                   | port | lang |\n\
         +------------------------+------+------+\n\
         | GET /api/products/{id} | 8080 | rust |\n\
         +------------------------+------+------+"
    );
    // a missing key is NULL; casting the text back to a number
    let out = run(
        "SELECT count(*) AS n, sum(CAST(attributes['server.port'] AS BIGINT)) AS ports, \
                   count(attributes['no.such.key']) AS missing FROM spans",
    )
    .await;
    assert_eq!(
        out,
        "+---+-------+---------+\n\
         | n | ports | missing |\n\
         +---+-------+---------+\n\
         | 2 | 8080  | 0       |\n\
         +---+-------+---------+"
    );
    // map_keys / map_extract as functions
    let out = run(
        "SELECT map_extract(attributes, 'db.query.text')[1] AS q FROM spans WHERE kind = 'CLIENT'",
    )
    .await;
    assert!(
        out.contains("SELECT * FROM products WHERE id = $1"),
        "{out}"
    );
    let out = run("SELECT cardinality(map_keys(attributes)) AS k FROM spans ORDER BY k").await;
    assert!(out.contains("| 1 |") && out.contains("| 6 |"), "{out}");
}
