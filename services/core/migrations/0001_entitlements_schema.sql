-- Platform Core: the catalog (modules, packages, add-ons) and what each
-- company is entitled to. Company ids are the UUIDs Auth uses.

CREATE TABLE modules (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE packages (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE package_modules (
    package     text NOT NULL REFERENCES packages (key) ON DELETE CASCADE,
    module      text NOT NULL REFERENCES modules (key),
    PRIMARY KEY (package, module)
);

-- Each add-on grants exactly one module.
CREATE TABLE add_ons (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9-]{0,62}$'),
    name        text NOT NULL,
    module      text NOT NULL REFERENCES modules (key),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A company has at most one subscription: one package, active or not.
CREATE TABLE company_subscriptions (
    company     uuid PRIMARY KEY,
    package     text NOT NULL REFERENCES packages (key),
    status      text NOT NULL CHECK (status IN ('active', 'inactive')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX company_subscriptions_package ON company_subscriptions (package);

CREATE TABLE company_add_ons (
    company     uuid NOT NULL,
    add_on      text NOT NULL REFERENCES add_ons (key),
    active      boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company, add_on)
);
CREATE INDEX company_add_ons_add_on ON company_add_ons (add_on);

-- Bumped in the same transaction as every change to what a company is
-- entitled to; Auth compares it with the version its cached access holds.
-- The row is also the per-company lock that serialises writes.
CREATE TABLE entitlement_versions (
    company     uuid PRIMARY KEY,
    version     bigint NOT NULL CHECK (version > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per version bump: who changed what, the entitlements before and
-- after, and when.
CREATE TABLE entitlement_history (
    id          bigserial PRIMARY KEY,
    company     uuid NOT NULL,
    version     bigint NOT NULL,
    actor       text NOT NULL,
    caller      text NOT NULL,
    action      text NOT NULL,
    subject     text NOT NULL,
    detail      jsonb NOT NULL,
    before      jsonb NOT NULL,
    after       jsonb NOT NULL,
    request_id  text,
    at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company, version)
);
