-- AI: prompts a company sent and the answers they got, with the model
-- that answered ("canned" while no provider is configured).
CREATE TABLE prompts (
    id         uuid        PRIMARY KEY,
    company    uuid        NOT NULL,
    prompt     text        NOT NULL CHECK (length(prompt) BETWEEN 1 AND 10000),
    response   text        NOT NULL,
    model      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every read is scoped to one company, newest first.
CREATE INDEX prompts_by_company ON prompts (company, created_at DESC, id DESC);
