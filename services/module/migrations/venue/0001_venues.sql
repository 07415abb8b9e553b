-- Venue: the venues a company runs.
CREATE TABLE venues (
    id         uuid        PRIMARY KEY,
    company    uuid        NOT NULL,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    city       text        NOT NULL CHECK (length(city) BETWEEN 1 AND 100),
    capacity   integer     NOT NULL CHECK (capacity > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every read is scoped to one company, newest first.
CREATE INDEX venues_by_company ON venues (company, created_at DESC, id DESC);
