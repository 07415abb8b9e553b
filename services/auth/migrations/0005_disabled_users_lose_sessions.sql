-- A disabled user has no session: disabling revokes every live session of
-- the user in auth_db itself (whoever disables, Auth or SQL), so enabling
-- the user again brings none of them back; the user signs in anew.
create function users_disabled_revoke_sessions() returns trigger
language plpgsql as $$
begin
    update sessions
       set revoked_at = now(), revoked_reason = 'user-disabled'
     where user_id = new.id and revoked_at is null;
    return null;
end;
$$;
create trigger users_disabled_revoke_sessions after update of status on users
    for each row when (old.status = 'active' and new.status is distinct from 'active')
    execute function users_disabled_revoke_sessions();
