-- Volunteers' weekly availability takes part in matching (issue #12, ADR 0042), as
-- announced by partners' volunteer.availability_changed (a later changed_at wins).
CREATE TABLE volunteers (
    id         uuid        PRIMARY KEY,
    active     boolean     NOT NULL,
    timezone   text        NOT NULL,
    changed_at timestamptz NOT NULL
);
CREATE TABLE volunteer_periods (
    volunteer_id uuid     NOT NULL REFERENCES volunteers (id) ON DELETE CASCADE,
    weekday      smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_time   time     NOT NULL,
    end_time     time     NOT NULL
);
CREATE INDEX volunteer_periods_by_volunteer ON volunteer_periods (volunteer_id);

-- Whether a provider may serve the window (earliest, latest): partners always; a
-- volunteer unless inactive, or with periods none of which meets the window (an end at
-- or before the start runs past midnight). The rules twin is
-- linli.servicekit.recurrence.within_weekly (test_matching_sql_equals_rules).
CREATE FUNCTION provider_available(
    p_kind text, p_id uuid, earliest timestamptz, latest timestamptz
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_kind <> 'volunteer' OR NOT EXISTS (SELECT 1 FROM volunteers v WHERE v.id = p_id)
        OR EXISTS (
            SELECT 1 FROM volunteers v WHERE v.id = p_id AND v.active AND (
                NOT EXISTS (SELECT 1 FROM volunteer_periods p WHERE p.volunteer_id = v.id)
                OR EXISTS (
                    SELECT 1
                    FROM volunteer_periods p,
                         generate_series(
                             ((earliest AT TIME ZONE v.timezone)::date - 1)::timestamp,
                             ((latest AT TIME ZONE v.timezone)::date)::timestamp,
                             interval '1 day') AS d(day)
                    WHERE p.volunteer_id = v.id
                      AND extract(isodow FROM d.day) = p.weekday
                      AND ((d.day + p.start_time) AT TIME ZONE v.timezone) < latest
                      AND ((d.day + p.end_time
                            + CASE WHEN p.end_time > p.start_time THEN interval '0'
                                   ELSE interval '1 day' END) AT TIME ZONE v.timezone)
                          > earliest)))
$$;
