#!/bin/sh
# tickrun demo: enqueue a shop's background jobs into a fresh SQLite file, run `tickrun run`
# three times, and look at what happened. Run it with `make demo` from the repository root
# (or `sh run_demo.sh` here, with tickrun on PATH). Takes about 15 seconds.
#
# Not `set -e`: two of the runs exit 1 on purpose (a task became dead). Each step states the
# exit code it expects instead; the script ends with 1 if any step surprised it.
set -u
cd "$(dirname "$0")" || exit 2

export TICKRUN_APP=jobs:app
export TICKRUN_DATABASE_URL=sqlite:///demo.db
unset TICKRUN_DEBUG
PYTHON=${PYTHON:-python3}
command -v tickrun >/dev/null || { echo "tickrun is not on PATH: run 'make demo'" >&2; exit 2; }

surprises=0

# shown ARGS... : the arguments as one would type them (quoted where the shell needs it).
shown() {
    out=
    for arg in "$@"; do
        case $arg in
            *[!A-Za-z0-9_./:=@%+,-]*) arg="'$arg'" ;;
        esac
        out="$out${out:+ }$arg"
    done
    printf '%s' "$out"
}

# step EXPECTED_EXIT_CODE COMMAND... : show the command, run it, check its exit code.
step() {
    expected=$1
    shift
    printf '\n$ %s\n' "$(shown "$@")"
    "$@" 2>&1
    code=$?
    if [ "$code" -ne 0 ] || [ "$expected" -ne 0 ]; then
        printf '(exit code %s)\n' "$code"
    fi
    if [ "$code" -ne "$expected" ]; then
        printf '!! expected exit code %s\n' "$expected"
        surprises=$((surprises + 1))
    fi
}

# enqueue VAR ARGS... : `tickrun enqueue ARGS`, keeping the printed task id in $VAR.
enqueue() {
    var=$1
    shift
    printf '\n$ tickrun enqueue %s\n' "$(shown "$@")"
    id=$(tickrun enqueue "$@" 2>&1)
    code=$?
    printf '%s\n' "$id"
    if [ "$code" -ne 0 ]; then
        printf '!! expected exit code 0, got %s\n' "$code"
        surprises=$((surprises + 1))
    fi
    eval "$var=\$(printf '%s\n' \"\$id\" | head -n 1)"
}

banner() {
    printf '\n==== %s ====\n' "$*"
}

banner "1. A fresh database: $TICKRUN_DATABASE_URL, application $TICKRUN_APP (see jobs.py)"
rm -rf demo.db demo.db-wal demo.db-shm demo.db-journal out
step 0 tickrun init

banner "2. Enqueue work"
enqueue WELCOME send_welcome_email --payload '{"user_id": 42, "email": "grace@example.com"}' \
    --key welcome:42
# The same key again adds nothing and prints the existing id.
enqueue WELCOME_AGAIN send_welcome_email --payload '{"user_id": 42, "email": "grace@example.com"}' \
    --key welcome:42
enqueue IMAGE resize_image --payload '{"src": "images/tick.pgm", "width": 8}'
enqueue CHARGE charge_card \
    --payload '{"order_id": 1001, "amount_cents": 4999, "card": "tok_declined"}'
enqueue NOTIFY notify_partner --payload '{"order_id": 1001}'
enqueue FEED import_feed --payload '{"url": "https://supplier.example/feed.csv"}'
enqueue LATER send_welcome_email --payload '{"user_id": 43, "email": "linus@example.com"}' \
    --in 1h
# A task with a result and a follow-up step; the web app asks for it by its key.
enqueue EXPORT export_orders --payload '{"user_id": 42}' --key export:42
# What the user's page sees before any run: pending (status_endpoint.py serves this as JSON).
step 0 "$PYTHON" status_endpoint.py --print export:42
# Transactional enqueue from Python: the task commits with the user's row, or not at all.
step 0 "$PYTHON" signup.py 7 ada@example.com
step 0 "$PYTHON" signup.py 8 bob@example.com --fail
step 0 tickrun due

banner "3. Run: what cron would do every minute"
# Exit code 1: charge_card raised Fail and is dead. notify_partner asked to retry in 2 s and
# import_feed failed its first attempt (backoff 2 s): both are waiting.
step 1 tickrun run --max-time 50s
sleep 2
# notify_partner succeeds on its second attempt; import_feed fails its last one and is dead.
step 1 tickrun run --max-time 50s
# An extra (late, doubled) trigger finds nothing due and does nothing.
step 0 tickrun run --max-time 50s

banner "4. What happened"
printf '\n$ find out -type f | sort\n'
find out -type f | sort
step 0 tickrun due
step 0 tickrun failures
step 0 tickrun dlq
step 0 tickrun show "$NOTIFY"
# The export's result, and its follow-up (children); the page now says where the file is.
step 0 tickrun show "$EXPORT"
step 0 "$PYTHON" status_endpoint.py --print export:42
step 0 "$PYTHON" status_endpoint.py --print export-email:42
step 0 tickrun stats
step 0 tickrun schedules
# For monitoring (cron it every few minutes): one line per problem, and exit code 1, here
# because the dead-letter queue is not empty.
step 1 tickrun check --max-dead 0 --max-silence 5m

banner "Done"
echo "Files the handlers wrote are under examples/demo/out/; the database is examples/demo/demo.db."
echo "Try: cd examples/demo && TICKRUN_APP=jobs:app ../../.venv/bin/tickrun show $CHARGE"
if [ "$surprises" -ne 0 ]; then
    echo "demo: $surprises step(s) did not end as expected (marked !! above)" >&2
    exit 1
fi
