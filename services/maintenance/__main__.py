"""`python -m services.maintenance`: run one maintenance worker."""
from services.common.runtime import run_service
from services.maintenance.app import build
from services.maintenance.settings import from_env

if __name__ == "__main__":
    run_service(from_env(), build)
