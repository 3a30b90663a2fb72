//! The rules' functions, which every process that plans or runs the SQL
//! registers ([`register_functions`]): re-validation, the payload and
//! behavioural fingerprints and the user hash, over the raw columns
//! through the same [`RawColumns`] code the native engine reads rows with,
//! and the viewer sketch as an aggregate. Each takes the rule set as its
//! last argument, a JSON literal, so it holds no state and a cluster's
//! processes need only its name.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BinaryArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, ColumnarValue, ScalarUDF, Volatility, create_udaf, create_udf,
};
use schemas::RuleSet;
use schemas::archive::RawColumns;
use schemas::fraud::value_hash;
use store::sketch::Sketch;

/// A UDF over every raw column (in schema order) and the rule set (a JSON
/// string literal), computing one value per row from [`RawColumns`].
fn raw_udf(
    name: &str,
    out: DataType,
    per_batch: impl Fn(&RawColumns<'_>, &RuleSet) -> ArrayRef + Send + Sync + 'static,
) -> ScalarUDF {
    let mut types: Vec<DataType> = schemas::raw_schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    types.push(DataType::Utf8);
    let udf = name.to_owned();
    create_udf(
        name,
        types,
        out,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let Some((ColumnarValue::Scalar(ScalarValue::Utf8(Some(json))), columns)) =
                args.split_last()
            else {
                return Err(DataFusionError::Plan(format!(
                    "{udf}: the last argument must be the rule set as a JSON string literal"
                )));
            };
            let rules: RuleSet = serde_json::from_str(json).map_err(|e| {
                DataFusionError::Plan(format!("{udf}: the rule set {json} does not parse: {e}"))
            })?;
            let arrays = ColumnarValue::values_to_arrays(columns)?;
            // Rebuild the batch under the raw schema, nullability relaxed to
            // what the reader produced.
            let fields: Vec<Field> = schemas::raw_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
            let cols =
                RawColumns::new(&batch).map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(ColumnarValue::Array(per_batch(&cols, &rules)))
        }),
    )
}

/// `vc_valid(raw columns, rules)`: the row passes re-validation under the
/// rule set.
pub fn valid_udf() -> ScalarUDF {
    raw_udf("vc_valid", DataType::Boolean, |c, rules| {
        Arc::new(c.verdicts(rules))
    })
}

/// `vc_payload_fp(raw columns, rules)`: the payload fingerprint of
/// [`schemas::dedup::Payload`]; null for rows invalid under the rule set.
pub fn payload_fp_udf() -> ScalarUDF {
    raw_udf("vc_payload_fp", DataType::UInt64, |c, rules| {
        let mut scratch = Vec::with_capacity(256);
        Arc::new(
            (0..c.len())
                .map(|i| {
                    c.is_valid(i, rules)
                        .then(|| c.payload(i).fingerprint_with(&mut scratch))
                })
                .collect::<UInt64Array>(),
        )
    })
}

/// `vc_print(raw columns, rules)`: a view's behavioural fingerprint
/// ([`schemas::fraud::fingerprint`]), as the bot-farm rule groups views.
pub fn print_udf() -> ScalarUDF {
    raw_udf("vc_print", DataType::UInt64, |c, _| {
        let mut scratch = Vec::with_capacity(64);
        Arc::new(
            (0..c.len())
                .map(|i| c.print(i, &mut scratch))
                .collect::<UInt64Array>(),
        )
    })
}

/// `vc_user_hash(user_id)`: the hash the invalid-traffic rules (and the
/// viewer sketch) know users by ([`schemas::fraud::value_hash`]).
pub fn user_hash_udf() -> ScalarUDF {
    create_udf(
        "vc_user_hash",
        vec![DataType::Utf8],
        DataType::UInt64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let users = arrays[0].as_string::<i32>();
            Ok(ColumnarValue::Array(Arc::new(
                users
                    .iter()
                    .map(|u| u.map(|u| value_hash(u.as_bytes())))
                    .collect::<UInt64Array>(),
            )))
        }),
    )
}

/// `vc_sketch(user_id)`: the unique-viewer [`Sketch`] of a group, in its
/// byte form (register-wise maximum, so partial sketches merge in any
/// order to the same bytes).
pub fn sketch_udaf() -> AggregateUDF {
    create_udaf(
        "vc_sketch",
        vec![DataType::Utf8],
        Arc::new(DataType::Binary),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(SketchAccumulator::default()))),
        Arc::new(vec![DataType::Binary]),
    )
}

#[derive(Debug, Default)]
struct SketchAccumulator(Sketch);

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::error::Result<()> {
        let users = values[0].as_string::<i32>();
        for user in users.iter().flatten() {
            self.0.insert(user.as_bytes());
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::error::Result<()> {
        let sketches: &BinaryArray = states[0].as_binary::<i32>();
        for bytes in sketches.iter().flatten() {
            let other = Sketch::from_bytes(bytes).ok_or_else(|| {
                DataFusionError::Internal("vc_sketch: a partial sketch does not parse".into())
            })?;
            self.0.merge(&other);
        }
        Ok(())
    }

    fn state(&mut self) -> datafusion::error::Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> datafusion::error::Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.0.to_bytes())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.heap_bytes()
    }
}

/// Registers the rules' functions ([`valid_udf`], [`payload_fp_udf`],
/// [`print_udf`], [`user_hash_udf`], [`sketch_udaf`]) with a context, a session state or a cluster process's
/// registry: every process that plans or runs the SQL needs them.
pub fn register_functions(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    registry.register_udf(Arc::new(valid_udf()))?;
    registry.register_udf(Arc::new(payload_fp_udf()))?;
    registry.register_udf(Arc::new(print_udf()))?;
    registry.register_udf(Arc::new(user_hash_udf()))?;
    registry.register_udaf(Arc::new(sketch_udaf()))?;
    Ok(())
}

/// The columns every UDF over raw rows takes, in schema order.
pub const RAW_COLUMNS: &str = "event_id, video_id, user_id, session_id, occurred_at, watch_seconds, device, country, referrer, quality, revenue_eligible, ad_impressions, schema_version, received_at, kafka_partition, kafka_offset, playback_token, playback, playback_id";
