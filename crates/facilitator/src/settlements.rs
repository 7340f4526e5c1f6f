//! `GET /settlements/{transaction}` and `POST /settlements/lookup`: where a payment's
//! settlement stands (`pending`, `settled`, `failed`, `expired`), read-only. See
//! [`x402_settle::status::SettlementStatus`] for the shape.

use actix_web::{HttpResponse, web};
use serde_json::json;
use x402_proto::PaymentRequest;
use x402_settle::SettleError;
use x402_settle::status::SettlementStatus;

use crate::state::AppState;

/// Registers the two routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/settlements/lookup", web::post().to(lookup))
        .route("/settlements/{transaction}", web::get().to(by_transaction));
}

fn answer(found: Result<Option<SettlementStatus>, SettleError>) -> HttpResponse {
    match found {
        Ok(Some(status)) => HttpResponse::Ok().json(status),
        Ok(None) => HttpResponse::NotFound().json(json!({"error": "no settlement found"})),
        Err(SettleError::Malformed(e)) => {
            HttpResponse::BadRequest().json(json!({"error": e.to_string(), "field": e.field}))
        }
        Err(e @ SettleError::Internal(_)) => {
            tracing::error!(error = %e, "settlement lookup failed on an internal error");
            HttpResponse::InternalServerError().json(json!({"error": e.to_string()}))
        }
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

async fn by_transaction(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    answer(
        state
            .facilitator
            .settlement_by_transaction(path.as_str())
            .await,
    )
}

async fn lookup(state: web::Data<AppState>, body: web::Json<serde_json::Value>) -> HttpResponse {
    match PaymentRequest::from_value(body.into_inner()) {
        Ok(req) => answer(state.facilitator.settlement_of(&req).await),
        Err(e) => answer(Err(SettleError::Malformed(e))),
    }
}
