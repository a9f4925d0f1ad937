"""`python -m services.execution`: run one execution worker."""
from services.common.runtime import run_service
from services.execution.app import build
from services.execution.settings import from_env

if __name__ == "__main__":
    run_service(from_env(), build)
