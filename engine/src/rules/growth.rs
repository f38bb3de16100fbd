//! Which rules can fire before their window closes.
//!
//! A rule's condition is *monotone* when adding rows to a window can never
//! make an entity that meets it stop meeting it: `count(*) >= 8`, a count of
//! distinct accounts, a sum of non-negative values, compared with `>=` or `>`
//! against a constant, joined by AND or OR. Such a rule is decided as soon as
//! the rows seen so far meet the condition: the evaluator runs it over the
//! open windows and fires at once ([`crate::evaluator::Evaluator::evaluate_early`]).
//! Anything else (a ratio, an average, `<`, NOT, a LEFT JOIN, a subtraction, a
//! sum of values that may be negative) can rise and fall as rows come, and
//! waits for the window to close.
//!
//! The classification reads the rule's logical plan as DataFusion makes it
//! from the SQL, before optimization, conservatively: a node or an
//! expression it does not know makes the rule wait for the close.
//!
//! Every relation of the plan is judged as a whole: each of its rows, once
//! there, must stay there as rows are added (then it *persists*), and each
//! column is either fixed for a row, or only goes up, or only down.

use std::fmt;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, Alias};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Distinct, Expr, JoinType, LogicalPlan, Operator};
use ingest::schema::column_name;

/// When a rule can fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Growth {
    /// its condition only grows within a window: it fires as soon as it holds
    Monotone,
    /// it waits for the window to close; why, in words
    AtClose(String),
}

impl Growth {
    pub fn is_monotone(&self) -> bool {
        matches!(self, Growth::Monotone)
    }
}

impl fmt::Display for Growth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Growth::Monotone => write!(f, "monotone: fires as soon as the condition holds"),
            Growth::AtClose(why) => write!(f, "at close: {why}"),
        }
    }
}

/// How a value moves, for one row, as rows are added to its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trend {
    /// never changes
    Fixed,
    /// never goes down (a boolean: once true, stays true)
    Up,
    /// never goes up
    Down,
    Unknown,
}

use Trend::{Down, Fixed, Unknown, Up};

impl Trend {
    fn flip(self) -> Trend {
        match self {
            Up => Down,
            Down => Up,
            t => t,
        }
    }

    /// Whether it never goes down (fixed counts).
    fn rises(self) -> bool {
        matches!(self, Fixed | Up)
    }

    /// Whether it never goes up (fixed counts).
    fn falls(self) -> bool {
        matches!(self, Fixed | Down)
    }

    /// The trend of a value that moves like both `self` and `other` (a sum,
    /// an AND, a union's column).
    fn join(self, other: Trend) -> Trend {
        match (self, other) {
            (Fixed, t) | (t, Fixed) => t,
            (a, b) if a == b => a,
            _ => Unknown,
        }
    }
}

/// What is known of a column or an expression.
#[derive(Debug, Clone, Copy)]
struct Col {
    trend: Trend,
    /// never negative (nor NaN)
    nonneg: bool,
}

impl Col {
    const UNKNOWN: Col = Col {
        trend: Unknown,
        nonneg: false,
    };

    fn of(trend: Trend) -> Col {
        Col {
            trend,
            nonneg: false,
        }
    }
}

/// Classifies a rule from its unoptimized logical plan: monotone when the
/// plan's rows persist as rows are added and its window start and entity
/// columns (`keys`, contract names) are fixed.
pub fn classify(plan: &LogicalPlan, keys: &[String]) -> Growth {
    let cols = match relation(plan) {
        Ok(c) => c,
        Err(why) => return Growth::AtClose(why),
    };
    let schema = plan.schema();
    let mut names = vec!["window_start".to_string()];
    names.extend(keys.iter().map(|k| column_name(k)));
    for name in names {
        let fixed = schema
            .fields()
            .iter()
            .position(|f| f.name() == &name)
            .is_some_and(|i| cols[i].trend == Fixed);
        if !fixed {
            return Growth::AtClose(format!("the output column `{name}` is not fixed per row"));
        }
    }
    Growth::Monotone
}

/// The columns of a relation whose rows persist, or why they may not.
fn relation(plan: &LogicalPlan) -> Result<Vec<Col>, String> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let cols: Vec<Col> = scan
                .projected_schema
                .fields()
                .iter()
                .map(|f| Col {
                    trend: Fixed,
                    nonneg: f.data_type().is_unsigned_integer(),
                })
                .collect();
            for f in &scan.filters {
                condition(f, &scan.projected_schema, &cols)?;
            }
            Ok(cols)
        }
        LogicalPlan::Projection(p) => {
            let input = relation(&p.input)?;
            Ok(p.expr
                .iter()
                .map(|e| expr(e, p.input.schema(), &input))
                .collect())
        }
        LogicalPlan::Filter(f) => {
            let input = relation(&f.input)?;
            condition(&f.predicate, f.input.schema(), &input)?;
            Ok(input)
        }
        LogicalPlan::Aggregate(a) => {
            let input = relation(&a.input)?;
            let schema = a.input.schema();
            let mut out = Vec::new();
            for g in &a.group_expr {
                if expr(g, schema, &input).trend != Fixed {
                    return Err(format!("the group key `{}` is not fixed per row", short(g)));
                }
                out.push(Col::of(Fixed));
            }
            for e in &a.aggr_expr {
                out.push(aggregate(e, schema, &input));
            }
            Ok(out)
        }
        LogicalPlan::Join(j) => {
            if j.join_type != JoinType::Inner {
                return Err(format!(
                    "a {} join loses rows as rows come",
                    j.join_type.to_string().to_uppercase()
                ));
            }
            let (left, right) = (relation(&j.left)?, relation(&j.right)?);
            for (l, r) in &j.on {
                let fixed = expr(l, j.left.schema(), &left).trend == Fixed
                    && expr(r, j.right.schema(), &right).trend == Fixed;
                if !fixed {
                    return Err(format!(
                        "the join key `{} = {}` is not fixed per row",
                        short(l),
                        short(r)
                    ));
                }
            }
            let mut cols = left;
            cols.extend(right);
            if let Some(f) = &j.filter {
                condition(f, &j.schema, &cols)?;
            }
            Ok(cols)
        }
        LogicalPlan::SubqueryAlias(s) => relation(&s.input),
        LogicalPlan::Repartition(r) => relation(&r.input),
        LogicalPlan::Sort(s) if s.fetch.is_none() => relation(&s.input),
        LogicalPlan::Distinct(Distinct::All(input)) => {
            let cols = relation(input)?;
            if cols.iter().any(|c| c.trend != Fixed) {
                return Err("DISTINCT over values that change".into());
            }
            Ok(cols)
        }
        LogicalPlan::Union(u) => {
            let mut cols: Option<Vec<Col>> = None;
            for input in &u.inputs {
                let next = relation(input)?;
                cols = Some(match cols {
                    None => next,
                    Some(c) => c
                        .iter()
                        .zip(&next)
                        .map(|(a, b)| Col {
                            trend: a.trend.join(b.trend),
                            nonneg: a.nonneg && b.nonneg,
                        })
                        .collect(),
                });
            }
            Ok(cols.unwrap_or_default())
        }
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Ok(plan
            .schema()
            .fields()
            .iter()
            .map(|_| Col::of(Fixed))
            .collect()),
        LogicalPlan::Limit(_) | LogicalPlan::Sort(_) => {
            Err("a LIMIT keeps some rows and drops others as rows come".into())
        }
        LogicalPlan::Window(_) => Err("a window function's value changes as rows come".into()),
        other => Err(format!("{} is not known to grow", other.display())),
    }
}

/// Checks that a filter or join condition, once true for a row, stays true.
fn condition(predicate: &Expr, schema: &DFSchema, cols: &[Col]) -> Result<(), String> {
    for part in split_conjunction(predicate) {
        if !expr(part, schema, cols).trend.rises() {
            return Err(format!("`{}` may stop holding as rows come", short(part)));
        }
    }
    Ok(())
}

/// An expression's text, cut to a readable length.
fn short(e: &Expr) -> String {
    let text = e.to_string();
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// A literal's value as a number, if it is one.
fn number(v: &ScalarValue) -> Option<f64> {
    match v.cast_to(&arrow::datatypes::DataType::Float64).ok()? {
        ScalarValue::Float64(Some(x)) if !x.is_nan() => Some(x),
        _ => None,
    }
}

fn expr(e: &Expr, schema: &DFSchema, cols: &[Col]) -> Col {
    let of = |e: &Expr| expr(e, schema, cols);
    match e {
        Expr::Column(c) => schema
            .maybe_index_of_column(c)
            .and_then(|i| cols.get(i).copied())
            .unwrap_or(Col::UNKNOWN),
        Expr::Literal(v, _) => Col {
            trend: Fixed,
            nonneg: number(v).is_some_and(|x| x >= 0.0),
        },
        Expr::Alias(Alias { expr: inner, .. }) => of(inner),
        Expr::Cast(c) => cast(of(&c.expr), c.field.data_type()),
        Expr::TryCast(c) => cast(of(&c.expr), c.field.data_type()),
        Expr::Not(inner) => Col::of(of(inner).trend.flip()),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => binary(of(left), *op, of(right), right),
        Expr::AggregateFunction(_)
        | Expr::WindowFunction(_)
        | Expr::ScalarSubquery(_)
        | Expr::Exists(_)
        | Expr::InSubquery(_)
        | Expr::OuterReferenceColumn(..)
        | Expr::Placeholder(_) => Col::UNKNOWN,
        _ => {
            // anything else of fixed values only is fixed, unless volatile
            let mut fixed = !e.is_volatile();
            let _ = e.apply_children(|c| {
                fixed &= of(c).trend == Fixed;
                Ok(TreeNodeRecursion::Continue)
            });
            Col::of(if fixed { Fixed } else { Unknown })
        }
    }
}

fn cast(inner: Col, to: &arrow::datatypes::DataType) -> Col {
    if inner.trend == Fixed {
        return inner;
    }
    // casts between numbers keep order (a cast to an integer rounds down)
    if to.is_numeric() { inner } else { Col::UNKNOWN }
}

fn binary(l: Col, op: Operator, r: Col, right: &Expr) -> Col {
    use Operator::*;
    if l.trend == Fixed && r.trend == Fixed {
        return Col {
            trend: Fixed,
            nonneg: l.nonneg && r.nonneg && matches!(op, Plus | Multiply | Divide),
        };
    }
    let trend = match op {
        Gt | GtEq if l.trend.rises() && r.trend.falls() => Up,
        Lt | LtEq if l.trend.falls() && r.trend.rises() => Up,
        And | Or => l.trend.join(r.trend),
        Plus => l.trend.join(r.trend),
        Minus => l.trend.join(r.trend.flip()),
        // a product of values that never go down nor below zero never goes down
        Multiply if l.nonneg && r.nonneg && l.trend.rises() && r.trend.rises() => Up,
        Divide => match right {
            Expr::Literal(v, _) if number(v).is_some_and(|x| x > 0.0) => l.trend,
            _ => Unknown,
        },
        _ => Unknown,
    };
    Col {
        trend,
        nonneg: l.nonneg && r.nonneg && matches!(op, Plus | Multiply | Divide),
    }
}

/// An aggregate's output, over input rows that persist.
fn aggregate(e: &Expr, schema: &DFSchema, cols: &[Col]) -> Col {
    let f = match e {
        Expr::Alias(Alias { expr, .. }) => return aggregate(expr, schema, cols),
        Expr::AggregateFunction(f) => f,
        _ => return Col::UNKNOWN,
    };
    let AggregateFunction { func, params } = f;
    let of = |e: &Expr| expr(e, schema, cols);
    // a filter must, once true for a row, stay true
    if params.filter.as_ref().is_some_and(|p| !of(p).trend.rises()) {
        return Col::UNKNOWN;
    }
    let args: Vec<Col> = params.args.iter().map(of).collect();
    let all = |ok: fn(&Col) -> bool| args.iter().all(ok);
    let up = Col {
        trend: Up,
        nonneg: true,
    };
    match func.name().to_ascii_lowercase().as_str() {
        // rows never leave, and a counted value is the same for good
        "count" if all(|c| c.trend == Fixed) => up,
        "sum" if params.distinct && all(|c| c.trend == Fixed && c.nonneg) => up,
        "sum" if !params.distinct && all(|c| c.trend.rises() && c.nonneg) => up,
        "max" if all(|c| c.trend.rises()) => Col {
            trend: Up,
            nonneg: all(|c| c.nonneg),
        },
        "min" if all(|c| c.trend.falls()) => Col::of(Down),
        _ => Col::UNKNOWN,
    }
}
