//! Statements and the ledger over HTTP (finance and admin; creators see only
//! their own lines, each with a proof they can check offline).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /v1/statements` | all | statements in the ledger (totals for finance/admin only) |
//! | `GET /v1/statements/{id}` | all | finance/admin: the statement (`?format=csv`: its CSV); creator: their lines, each with a line proof |
//! | `GET /v1/ledger/entries` | finance/admin | every ledger entry |
//! | `GET /v1/ledger/entries/{seq}/proof` | finance/admin | the entry's inclusion proof (C2SP tlog-proof) |
//! | `GET /v1/ledger/checkpoint` | all | the latest signed checkpoint |
//! | `GET /v1/creators/{id}/earnings?period` | the creator, finance/admin | per video: statement figures beside estimated ones (merged batch + speed × the rate card) until the month is final |

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use billing::ledger::{Entry, Kind, Ledger, LineProof, Log, Totals};
use billing::statement;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use utoipa::ToSchema;

use super::app::App;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::params::{Params, PathParam, QueryMap};
use crate::tokens::Role;

pub(crate) fn ledger_error(e: billing::Error) -> ApiError {
    match e.class() {
        schemas::ErrorClass::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the store is unavailable: {e}"),
        ),
        schemas::ErrorClass::Corrupt => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ledger_corrupt",
            format!("{e}; an operator should run `viewcount ledger verify`"),
        ),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

pub(crate) async fn read_log(app: &App) -> ApiResult<Log> {
    Ledger::new(app.store())
        .read_signed()
        .await
        .map_err(ledger_error)
}

pub(crate) fn finance_only(caller: &Caller) -> ApiResult<()> {
    match caller.0.role {
        Role::Finance | Role::Admin => Ok(()),
        Role::Creator => Err(ApiError::forbidden("the ledger (finance and admin only)")),
    }
}

pub(crate) fn text(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// How many statements' totals.json `/v1/statements` reads at once.
const TOTALS_READS_AT_ONCE: usize = 16;

/// A statement as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementSummary {
    /// Its ledger entry.
    pub(crate) ledger_entry: u64,
    /// `YYYY-MM`.
    pub(crate) period: String,
    pub(crate) statement_id: String,
    /// Issued before the period could be billed; never paid as is.
    pub(crate) provisional: bool,
    /// The period was finalized with this statement.
    #[serde(rename = "final")]
    pub(crate) is_final: bool,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) currency: String,
    /// The statement total (finance and admin only).
    pub(crate) total: Option<String>,
    /// Creators paid (finance and admin only).
    pub(crate) creators: Option<u64>,
}

/// Every statement in the ledger, oldest first.
#[utoipa::path(
    get,
    path = "/v1/statements",
    responses(
        (status = 200, description = "The statements", body = [StatementSummary]),
        (status = 400, description = "A query parameter was given", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn statements(
    State(app): State<Arc<App>>,
    caller: Caller,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<Vec<StatementSummary>>> {
    Params::new(q, &[])?;
    let log = read_log(&app).await?;
    let money = caller.0.role != Role::Creator;
    let store = app.store();
    let statements: Vec<&Entry> = log
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Statement)
        .collect();
    // Format-2 entries seal their totals in the statement's totals.json:
    // read (and checked against the entry) only for those who see money,
    // several at a time, in entry order.
    let totals: Vec<Option<Totals>> = if money {
        // The reads as a list first: a closure mapping entries to reads
        // would not be `Send` for every lifetime axum asks of a handler.
        let mut reads = Vec::with_capacity(statements.len());
        for e in &statements {
            reads.push(statement::entry_totals(store.as_ref(), e));
        }
        let read: Vec<Totals> = futures::stream::iter(reads)
            .buffered(TOTALS_READS_AT_ONCE)
            .try_collect()
            .await
            .map_err(ledger_error)?;
        read.into_iter().map(Some).collect()
    } else {
        vec![None; statements.len()]
    };
    let out = statements
        .into_iter()
        .zip(totals)
        .map(|(e, totals)| StatementSummary {
            ledger_entry: e.seq,
            period: e.period.clone(),
            statement_id: e.statement_id.clone(),
            provisional: e.provisional,
            is_final: log
                .finalized(&e.period)
                .is_some_and(|f| f.references.first() == Some(&e.seq)),
            recorded_at: e.recorded_at,
            currency: e.currency().to_owned(),
            total: totals.as_ref().map(|t| t.amount.clone()),
            creators: totals.as_ref().map(|t| t.creators),
        })
        .collect();
    Ok(axum::Json(out))
}

/// A creator's lines of a statement, each provable alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatorStatement {
    pub(crate) statement_id: String,
    pub(crate) period: String,
    pub(crate) provisional: bool,
    #[serde(rename = "final")]
    pub(crate) is_final: bool,
    pub(crate) ledger_entry: u64,
    pub(crate) currency: String,
    pub(crate) creator_id: String,
    /// Σ of the lines' amounts.
    pub(crate) total: String,
    pub(crate) lines: Vec<CreatorLine>,
}

/// One line and its proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatorLine {
    pub(crate) video_id: String,
    pub(crate) title: String,
    pub(crate) billable_views: i64,
    pub(crate) cpm: String,
    pub(crate) amount: String,
    /// `views` or `adjustment`.
    pub(crate) kind: String,
    /// For an adjustment: the ledger entry it corrects.
    pub(crate) reference: Option<u64>,
    /// Check it offline: save it to a file and run
    /// `viewcount ledger check-proof FILE --pubkey log.pub`.
    #[schema(value_type = Object)]
    pub(crate) proof: LineProof,
}

/// A statement: finance and admin get all of it (JSON, or `?format=csv`);
/// a creator gets their own lines, each with a proof.
#[utoipa::path(
    get,
    path = "/v1/statements/{statement_id}",
    params(
        ("statement_id" = String, Path, description = "The statement", pattern = r"^[0-9a-f]{32}$"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`", pattern = r"^(json|csv)$"),
    ),
    responses(
        (status = 200, description = "The statement. JSON: for finance and admin, statement.json with `ledger_entry` and `final` added; for a creator, a CreatorStatement. CSV (`format=csv`): the statement's CSV (a creator's: their lines)", content(
            (Object = "application/json"),
            (String = "text/csv")
        )),
        (status = 400, description = "A bad id or format", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such statement in the ledger", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn statement(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<Response> {
    if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ApiError::bad(
            "statement_id",
            "a statement id is 32 lower-case hex digits",
        ));
    }
    let params = Params::new(q, &["format"])?;
    let csv = match params.get("format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::bad("format", "use json or csv")),
    };
    let log = read_log(&app).await?;
    let e = log.statement(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no statement {id} in the ledger"),
        )
    })?;
    let is_final = log
        .finalized(&e.period)
        .is_some_and(|f| f.references.first() == Some(&e.seq));
    let store = app.store();
    let creator = match caller.0.role {
        Role::Creator => caller.0.creator_id.clone().unwrap_or_default(),
        Role::Finance | Role::Admin => {
            if csv {
                let (bytes, _) = statement::read_csv(store.as_ref(), e, "statement.csv")
                    .await
                    .map_err(ledger_error)?;
                return Ok(text("text/csv; charset=utf-8", bytes));
            }
            let json = statement::read_recorded(store.as_ref(), e, "statement.json")
                .await
                .map_err(ledger_error)?;
            let mut v: serde_json::Value = serde_json::from_slice(&json).map_err(|err| {
                ledger_error(billing::Error::Tampered(format!(
                    "{}: {err}",
                    statement::file_of(e, "statement.json")
                )))
            })?;
            v["ledger_entry"] = e.seq.into();
            v["final"] = is_final.into();
            return Ok(axum::Json(v).into_response());
        }
    };
    let (statement_csv, recorded) = statement::read_csv(store.as_ref(), e, "statement.csv")
        .await
        .map_err(ledger_error)?;
    let leaves = billing::ledger::line_leaves(&statement_csv);
    let mine: Vec<(u64, statement::RecordedLine)> = recorded
        .into_iter()
        .enumerate()
        .filter(|(_, r)| r.line.creator_id.as_deref() == Some(creator.as_str()))
        .map(|(i, r)| (i as u64, r))
        .collect();
    if csv {
        let mut out = statement_csv
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .to_vec();
        out.push(b'\n');
        for (i, _) in &mine {
            out.extend_from_slice(leaves[*i as usize]);
            out.push(b'\n');
        }
        return Ok(text("text/csv; charset=utf-8", out));
    }
    let entry_proof = Ledger::new(app.store())
        .prove_in(&log, e.seq)
        .await
        .map_err(ledger_error)?;
    let mut lines = Vec::with_capacity(mine.len());
    let mut amounts = Vec::with_capacity(mine.len());
    for (i, r) in mine {
        let (line, n, hashes) =
            billing::ledger::prove_line(&statement_csv, i).map_err(ledger_error)?;
        let l = r.line;
        let (Some(cpm), Some(amount)) = (l.cpm, l.amount) else {
            return Err(ledger_error(billing::Error::Tampered(format!(
                "{}: the line of {} for {creator} has no cpm or amount",
                statement::file_of(e, "statement.csv"),
                l.video_id
            ))));
        };
        amounts.push(amount);
        lines.push(CreatorLine {
            video_id: l.video_id,
            title: l.title,
            billable_views: l.billable_views,
            cpm: billing::money::format_cpm(cpm),
            amount: billing::money::format_amount(amount),
            kind: l.kind.as_str().to_owned(),
            reference: l.reference,
            proof: LineProof {
                line,
                index: i,
                lines: n,
                hashes,
                entry_proof: entry_proof.clone(),
            },
        });
    }
    let total = billing::earnings::total(&amounts, "the creator's total").map_err(ledger_error)?;
    Ok(axum::Json(CreatorStatement {
        statement_id: e.statement_id.clone(),
        period: e.period.clone(),
        provisional: e.provisional,
        is_final,
        ledger_entry: e.seq,
        currency: e.currency().to_owned(),
        creator_id: creator,
        total: billing::money::format_amount(total),
        lines,
    })
    .into_response())
}

/// Every ledger entry, by seq.
#[utoipa::path(
    get,
    path = "/v1/ledger/entries",
    responses(
        (status = 200, description = "The entries (each as stored)", body = [Object]),
        (status = 400, description = "A query parameter was given", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A creator token", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn entries(
    State(app): State<Arc<App>>,
    caller: Caller,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<Vec<Entry>>> {
    Params::new(q, &[])?;
    finance_only(&caller)?;
    Ok(axum::Json(read_log(&app).await?.entries))
}

/// An entry's inclusion proof against the latest checkpoint (C2SP
/// tlog-proof; its `extra` line is the entry's bytes).
#[utoipa::path(
    get,
    path = "/v1/ledger/entries/{seq}/proof",
    params(("seq" = u64, Path, description = "The entry", minimum = 0)),
    responses(
        (status = 200, description = "The proof", content_type = "text/plain"),
        (status = 400, description = "A bad seq", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A creator token", body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn entry_proof(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(seq): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<Response> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad("seq", "an entry number: 0, 1, 2, ..."))?;
    Params::new(q, &[])?;
    finance_only(&caller)?;
    match Ledger::new(app.store()).prove(seq).await {
        Ok(p) => Ok(text("text/plain; charset=utf-8", p)),
        Err(billing::Error::Input(m)) => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", m)),
        Err(e) => Err(ledger_error(e)),
    }
}

/// The latest signed checkpoint (C2SP tlog-checkpoint in a signed note).
#[utoipa::path(
    get,
    path = "/v1/ledger/checkpoint",
    responses(
        (status = 200, description = "The checkpoint", content_type = "text/plain"),
        (status = 400, description = "A query parameter was given", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "The ledger is empty", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn checkpoint(
    State(app): State<Arc<App>>,
    _caller: Caller,
    QueryMap(q): QueryMap,
) -> ApiResult<Response> {
    Params::new(q, &[])?;
    match Ledger::new(app.store())
        .latest_checkpoint()
        .await
        .map_err(ledger_error)?
    {
        Some(b) => Ok(text("text/plain; charset=utf-8", b)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the ledger is empty: no statement was reported yet",
        )),
    }
}

/// A statement an answer comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementRef {
    pub(crate) statement_id: String,
    pub(crate) ledger_entry: u64,
    /// Not payable as is.
    pub(crate) provisional: bool,
    /// The period was finalized with it: this is what is paid.
    #[serde(rename = "final")]
    pub(crate) is_final: bool,
}

/// Billable views and what they earn.
#[derive(Debug, Serialize, ToSchema)]
pub struct Earned {
    pub(crate) billable_views: i64,
    /// Two decimals, in the rate card's currency.
    pub(crate) amount: String,
}

/// One video's earnings in the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoEarnings {
    pub(crate) video_id: String,
    pub(crate) title: String,
    /// From the period's statement (the final one once finalized).
    pub(crate) statement: Option<Earned>,
    /// Until the period is finalized: the merged batch + speed billable
    /// views × the rate card. An estimate: speed numbers are not yet
    /// filtered for fraud, and it is never recorded or paid.
    pub(crate) estimated: Option<Earned>,
}

/// A creator's earnings in a period: statement figures beside estimates.
#[derive(Debug, Serialize, ToSchema)]
pub struct Earnings {
    pub(crate) creator_id: String,
    /// `YYYY-MM`.
    pub(crate) period: String,
    pub(crate) currency: Option<String>,
    /// The statement the `statement` figures come from (`null`: none yet).
    pub(crate) statement: Option<StatementRef>,
    /// Σ of the statement figures.
    pub(crate) statement_total: Option<String>,
    /// Σ of the estimates (`null` once finalized, or without a rate card).
    pub(crate) estimated_total: Option<String>,
    pub(crate) videos: Vec<VideoEarnings>,
    pub(crate) warnings: Vec<String>,
}

/// A creator's earnings per video in a month: *finalized* (or latest
/// statement) figures from the ledger's statements beside *estimated* ones
/// (merged batch + speed × the rate card) until the month is finalized.
#[utoipa::path(
    get,
    path = "/v1/creators/{creator_id}/earnings",
    params(
        ("creator_id" = String, Path, description = "The creator"),
        ("period" = Option<String>, Query, description = "The month, YYYY-MM; default: the current one", pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"),
    ),
    responses(
        (status = 200, description = "Statement and estimated earnings per video", body = Earnings),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another creator", body = ErrorBody),
        (status = 404, description = "The catalog gives the creator no videos", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn earnings(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(creator_id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<Earnings>> {
    use billing::earnings::{Estimate, Figures, rate_stretches, statement_figures, total};
    use billing::money::format_amount;
    use billing::statement::Period;

    let q = Params::new(q, &["period"])?;
    let period = match q.get("period") {
        Some(p) => Period::parse(p).map_err(|e| ApiError::bad("period", e.to_string()))?,
        None => Period::parse(&crate::source::now().format("%Y-%m").to_string()).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?,
    };
    let snap = app.snapshot();
    let videos: Vec<String> = super::views::creator_videos(&snap, &caller, &creator_id)?.to_vec();
    let label = period.label();
    let log = read_log(&app).await?;
    let finalized = log.finalized(&label);
    let entry = match finalized {
        Some(f) => f
            .references
            .first()
            .and_then(|&s| log.entries.get(s as usize)),
        None => log.of(&label, Kind::Statement).last(),
    };
    let mut warnings = Vec::new();
    // Statement figures: the creator's lines, per video.
    let mut from_statement = match entry {
        Some(e) => {
            let (_, lines) = statement::read_csv(app.store().as_ref(), e, "statement.csv")
                .await
                .map_err(ledger_error)?;
            statement_figures(&lines, &creator_id).map_err(ledger_error)?
        }
        None => Default::default(),
    };
    // Estimates until the period is final: merged billable views per
    // stretch of constant rate, priced by billing as the statement will be.
    let mut estimate: Option<Estimate> = None;
    match (finalized, app.rates()) {
        (Some(_), _) => {}
        (None, None) => warnings.push(
            "no rate card is configured on this server (serve --rates FILE): estimates are not offered".into(),
        ),
        (None, Some(rates)) => {
            let refs: Vec<&str> = videos.iter().map(String::as_str).collect();
            let mut e = Estimate::default();
            for (a, b, cpm) in rate_stretches(rates, &creator_id, period) {
                let m = app.merge(&snap, &refs, a, b, false).await;
                for (i, v) in videos.iter().enumerate() {
                    let views = m.batch[i].billable_views + m.speed_total(i).billable_views;
                    e.add(v, cpm, i64::try_from(views).unwrap_or(i64::MAX));
                }
                for w in m.warnings {
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
            }
            estimate = Some(e);
        }
    }
    let earned = |f: Figures| Earned {
        billable_views: f.billable_views,
        amount: format_amount(f.amount),
    };
    let mut rows = Vec::with_capacity(videos.len());
    let (mut statement_amounts, mut estimated_amounts) = (Vec::new(), Vec::new());
    for v in &videos {
        let statement = match entry {
            Some(_) => {
                let f = from_statement.remove(v).unwrap_or_default();
                statement_amounts.push(f.amount);
                Some(earned(f))
            }
            None => None,
        };
        let estimated = match &estimate {
            Some(e) => {
                let f = e.figures(v).map_err(ledger_error)?;
                estimated_amounts.push(f.amount);
                Some(earned(f))
            }
            None => None,
        };
        rows.push(VideoEarnings {
            video_id: v.clone(),
            title: snap
                .catalog
                .as_ref()
                .and_then(|c| c.entry(v))
                .map(|e| e.title.clone())
                .unwrap_or_default(),
            statement,
            estimated,
        });
    }
    let statement_total = match entry {
        Some(_) => Some(format_amount(
            total(&statement_amounts, "the statement total").map_err(ledger_error)?,
        )),
        None => None,
    };
    let estimated_total = match &estimate {
        Some(_) => Some(format_amount(
            total(&estimated_amounts, "the estimated total").map_err(ledger_error)?,
        )),
        None => None,
    };
    Ok(axum::Json(Earnings {
        creator_id,
        period: label.clone(),
        currency: entry
            .map(|e| e.currency().to_owned())
            .or_else(|| app.rates().map(|r| r.currency.clone())),
        statement: entry.map(|e| StatementRef {
            statement_id: e.statement_id.clone(),
            ledger_entry: e.seq,
            provisional: e.provisional,
            is_final: finalized.is_some(),
        }),
        statement_total,
        estimated_total,
        videos: rows,
        warnings,
    }))
}
