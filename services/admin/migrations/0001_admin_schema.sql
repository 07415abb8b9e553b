-- Platform Admin: organizations awaiting approval, and the audit log of
-- every change made through Admin.

CREATE TABLE organizations (
    id               uuid PRIMARY KEY,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'approved', 'rejected')),
    requested_by     text NOT NULL,
    decided_by       text,
    decision_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX organizations_status ON organizations (status, created_at);

-- One row per change: who, what, on which target, the state before and
-- after, and when. `outcome` is `invalidation-failed` when Platform Core
-- applied the change but Auth could not be told to recompute access.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    outcome     text NOT NULL DEFAULT 'ok' CHECK (outcome IN ('ok', 'invalidation-failed')),
    before      jsonb,
    after       jsonb,
    request_id  text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_target ON audit_log (target, id);
