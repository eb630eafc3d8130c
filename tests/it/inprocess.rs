//! The service in-process (`App::build` + `run_until`, port 0, temp store) with delivery
//! driven step by step: no child process, no polling.

use crate::harness::*;

#[tokio::test]
async fn in_process_with_delivery_stepped_by_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    // Paused: the destination's own worker holds off; the test decides when delivery happens.
    let extra = "paused = true\nretry = { initial_delay = \"1h\" }";
    let text = config(dir.path(), &sink.url, extra);
    let config = hookrelay::config::Config::parse(&text, "test", std::iter::empty()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = hookrelay::App::build(config, listener).await.unwrap();
    let hook = format!("http://{}/hooks/gitlab", app.local_addr().unwrap());
    let delivery = app.delivery();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let post = |n: usize| {
        client
            .post(&hook)
            .header("content-type", "application/json")
            .header("x-gitlab-event", "Push Hook")
            .header("x-gitlab-token", TOKEN)
            .body(push_body(n))
            .send()
    };
    for n in 0..2 {
        assert_eq!(post(n).await.unwrap().status(), 202);
    }
    assert_eq!(sink.count(), 0);
    assert_eq!(delivery.deliver_due("sink").await, Some(2));
    assert_eq!(sink.count(), 2, "a step ends with its attempts made");
    assert_eq!(delivery.deliver_due("sink").await, Some(0));

    sink.fail_next(1);
    assert_eq!(post(2).await.unwrap().status(), 202);
    assert_eq!(delivery.deliver_due("sink").await, Some(1));
    // Failed, and its retry is an hour away: nothing is due.
    assert_eq!(delivery.deliver_due("sink").await, Some(0));
    assert_eq!(delivery.deliver_due("nowhere").await, None);
    stop.send(()).unwrap();
    server.await.unwrap();
}
