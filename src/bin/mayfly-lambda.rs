//! The `mayfly-lambda` function (the `bootstrap` of a provided.al2023 Lambda): connects to
//! the deployment once, then serves invocations from the Lambda Runtime API — a scheduled
//! event runs a pass, an SQS event from the events queue applies its events and runs a pass within the
//! invocation's remaining time.
//! JSON logs go to stderr; each pass's metrics go to stdout as one CloudWatch Embedded
//! Metric Format line. Settings come from the environment (see `mayfly-lambda --help`).

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use mayfly::lambda::{Function, LambdaArgs};
use serde_json::Value;

/// How long before the function's timeout the pass after an SQS batch stops, so that the
/// batch's answer reaches Lambda in time.
const ANSWER_MARGIN_MS: u64 = 5_000;

fn main() -> ExitCode {
    let args = LambdaArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAYFLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the async runtime.");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: LambdaArgs) -> ExitCode {
    let function = match Function::connect(&args).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, deployment = %args.global.name, "Cannot connect to the deployment.");
            report_init_error(&e.to_string()).await;
            return ExitCode::from(e.exit_code());
        }
    };
    let function = &function;
    let handler = service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        // Leave the answer time to reach Lambda before the function's timeout.
        let remaining_ms = event
            .context
            .deadline
            .saturating_sub(Utc::now().timestamp_millis().max(0) as u64);
        let budget = Duration::from_millis(remaining_ms.saturating_sub(ANSWER_MARGIN_MS));
        match function
            .invoke_within(&event.payload, Utc::now(), Some(budget))
            .await
        {
            Ok(invoked) => {
                for line in invoked.emf_lines(function.deployment()) {
                    println!("{line}");
                }
                let handled = &invoked.handled;
                if let Some(pass) = &handled.pass {
                    tracing::info!(
                        request_id = %request_id,
                        launched = pass.launch.instances.len(),
                        duration_ms = pass.duration_ms,
                        errors = pass.has_errors(),
                        "Pass done."
                    );
                }
                Ok::<Value, Diagnostic>(handled.response())
            }
            Err(e) => {
                tracing::error!(request_id = %request_id, error = %e, "Invocation failed.");
                Err(Diagnostic {
                    error_type: e.error_type().to_owned(),
                    error_message: e.to_string(),
                })
            }
        }
    });
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "The Lambda runtime loop stopped.");
            ExitCode::from(1)
        }
    }
}

/// Tells Lambda why the function could not start (`POST /runtime/init/error`), so the
/// invocation fails with that reason rather than a bare exit. Best effort: the process
/// exits non-zero either way.
async fn report_init_error(message: &str) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({
        "errorMessage": message,
        "errorType": "mayfly.InitFailed",
    })
    .to_string();
    let request = hyper::Request::post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "mayfly.InitFailed")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body)));
    let Ok(request) = request else {
        return;
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    if let Err(e) = client.request(request).await {
        tracing::error!(error = %e, "Cannot report the init error to the Lambda Runtime API.");
    }
}
