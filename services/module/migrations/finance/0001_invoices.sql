-- Finance: a company's invoices. Amounts are integers in the currency's
-- minor unit; an invoice number is unique within its company.
CREATE TABLE invoices (
    id           uuid        PRIMARY KEY,
    company      uuid        NOT NULL,
    number       text        NOT NULL CHECK (length(number) BETWEEN 1 AND 64),
    customer     text        NOT NULL CHECK (length(customer) BETWEEN 1 AND 200),
    amount_cents bigint      NOT NULL CHECK (amount_cents >= 0),
    currency     text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status       text        NOT NULL DEFAULT 'draft'
                             CHECK (status IN ('draft', 'issued', 'paid', 'void')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company, number)
);

-- Every read is scoped to one company, newest first.
CREATE INDEX invoices_by_company ON invoices (company, created_at DESC, id DESC);
