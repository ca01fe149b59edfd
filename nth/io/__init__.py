"""Results on disk: the versioned HDF5 schema shared by solve, sweep and kernel files, atomic writing, resumable
width sweeps, and the ``nth kernel`` report."""

from ._files import abandon as abandon, check_output_path as check_output_path, write_atomic as write_atomic, writer_lock as writer_lock
from ._hdf5 import open_results as open_results, package_versions as package_versions
from ._hdf5 import read_h5 as read_h5, write_h5 as write_h5
from ._schema import ERROR_QUANTITIES as ERROR_QUANTITIES, SCHEMA_VERSION as SCHEMA_VERSION
from ._schema import prediction_labels as prediction_labels
from ._solve import default_out_path as default_out_path, format_table as format_table
from ._solve import run_solve as run_solve, stderr_log as stderr_log, write_result as write_result
from ._sweep import SweepConfig as SweepConfig, finished_runs as finished_runs, load_sweep as load_sweep
from ._sweep import no_values as no_values, run_sweep as run_sweep, trained_by as trained_by
from ._corr import default_corr_path as default_corr_path, format_corr as format_corr, load_corr as load_corr
from ._corr import run_corr as run_corr
