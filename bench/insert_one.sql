-- pgbench script for the webhook-ingest baseline (bench/run.sh): one row per transaction into a
-- table shaped like inbound_webhooks' hot path (a unique event id and a raw body of about the
-- same size), so the ratio compares Strongroom's verify + store + dedupe with PostgreSQL doing
-- only the store.
INSERT INTO ingest (event_id, payload)
VALUES (md5(random()::text || clock_timestamp()::text),
        '{"id":"evt_baseline","object":"event","type":"payment_intent.succeeded","created":1700000000,"livemode":false,"data":{"object":{"id":"pi_baseline","object":"payment_intent","amount":2000,"currency":"usd","status":"succeeded"}}}');
