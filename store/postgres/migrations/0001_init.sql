-- Schema 1 of the PostgreSQL store. Times are timestamptz; a record's whole content is its
-- `data` (the JSON of store.Delivery), with the columns the queries select and order by.

-- The lease: one row per installation. Whoever holds it with an unexpired expires_at leads; the
-- epoch only grows, and every write of a leader is fenced by it (store/postgres/lease.go).
CREATE TABLE leader (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE position (
    name           text PRIMARY KEY,
    cursor         text NOT NULL DEFAULT '',
    cursor_set_at  timestamptz,
    since          timestamptz,
    initialized    boolean NOT NULL DEFAULT false,
    -- moves on with every operator's cursor change: the leader's own cursor moves are
    -- conditioned on the generation its pipeline started from (store/postgres/deliveries.go)
    generation     bigint NOT NULL DEFAULT 0,
    -- keys the hashes of addresses (store.HashRecipient); never leaves the database but in memory
    address_secret bytea NOT NULL
);

CREATE TABLE deliveries (
    -- byte order, as the bbolt store lists records: event ids are ASCII
    event_id   text COLLATE "C" PRIMARY KEY,
    kind       text NOT NULL,
    state      text NOT NULL,
    -- the leader's epoch that wrote the record: a `sending` record of an older epoch is an
    -- interrupted send, and only its own epoch may settle it
    epoch      bigint NOT NULL,
    message_id text,
    recipient  text,
    updated_at timestamptz NOT NULL,
    -- queued by an operator's `dead retry`; a final record leaves the queue
    retry      boolean NOT NULL DEFAULT false,
    data       jsonb NOT NULL
);
CREATE INDEX deliveries_problems ON deliveries (event_id) WHERE state IN ('dead', 'ambiguous');
CREATE INDEX deliveries_sending ON deliveries (event_id) WHERE state = 'sending';
CREATE INDEX deliveries_retry ON deliveries (event_id) WHERE retry;
CREATE INDEX deliveries_message ON deliveries (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX deliveries_recipient ON deliveries (recipient) WHERE recipient IS NOT NULL;
CREATE INDEX deliveries_updated ON deliveries (updated_at);

-- store.Delivery.OnceKey -> the event holding it; never pruned.
CREATE TABLE once_keys (
    key      text PRIMARY KEY,
    event_id text NOT NULL
);

-- store.Delivery.SupersedeKey -> the newest event whose email of it went out, or may have.
CREATE TABLE latest (
    key        text PRIMARY KEY,
    event_id   text NOT NULL,
    created_at timestamptz NOT NULL
);

-- A send API request's sealed content, until its record is final.
CREATE TABLE requests (
    id     text PRIMARY KEY,
    sealed bytea NOT NULL
);

CREATE TABLE idempotency (
    key         bytea PRIMARY KEY,
    accepted_at timestamptz NOT NULL,
    fingerprint bytea NOT NULL,
    request_id  text NOT NULL
);
