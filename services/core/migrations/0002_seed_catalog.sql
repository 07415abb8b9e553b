-- The initial catalog. Later changes go through the catalog routes, which
-- bump the entitlement version of every company they affect.

INSERT INTO modules (key, name) VALUES
    ('basic', 'Basic'),
    ('finance', 'Finance'),
    ('market', 'Market'),
    ('touring', 'Touring'),
    ('venue', 'Venue'),
    ('ai', 'AI')
ON CONFLICT (key) DO NOTHING;

INSERT INTO packages (key, name) VALUES
    ('basic-standard', 'Basic Standard'),
    ('basic-plus-finance', 'Basic plus Finance')
ON CONFLICT (key) DO NOTHING;

INSERT INTO package_modules (package, module) VALUES
    ('basic-standard', 'basic'),
    ('basic-plus-finance', 'basic'),
    ('basic-plus-finance', 'finance')
ON CONFLICT DO NOTHING;

INSERT INTO add_ons (key, name, module) VALUES
    ('finance', 'Finance add-on', 'finance'),
    ('market', 'Market add-on', 'market'),
    ('touring', 'Touring add-on', 'touring'),
    ('venue', 'Venue add-on', 'venue'),
    ('ai', 'AI add-on', 'ai')
ON CONFLICT (key) DO NOTHING;
