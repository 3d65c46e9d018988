# Finds what the torch.distributed backend (python/csrc) needs: torch's C++ headers and
# libraries from Debian's libtorch-dev, pybind11's headers, the system Python's headers.
#   STARLING_TORCH=AUTO (default): build it when everything is found, else say why not;
#   ON: fail when something is missing; OFF: never.
# Never in sanitizer or fuzz builds: the module is loaded by an uninstrumented Python.
set(STARLING_TORCH AUTO CACHE STRING "Build the torch.distributed backend (AUTO, ON, OFF)")
set_property(CACHE STARLING_TORCH PROPERTY STRINGS AUTO ON OFF)
set(STARLING_TORCH_BUILT OFF)
if(STARLING_TORCH STREQUAL "OFF" OR STARLING_SANITIZE OR STARLING_TSAN OR STARLING_FUZZ)
  return()
endif()

find_path(STARLING_TORCH_INCLUDE torch/csrc/distributed/c10d/ProcessGroup.hpp
          PATHS /usr/include)
find_path(STARLING_PYBIND11_INCLUDE pybind11/pybind11.h PATHS /usr/include)
execute_process(COMMAND /usr/bin/python3 -c
                  "import sysconfig; print(sysconfig.get_paths()['include'])"
                OUTPUT_VARIABLE STARLING_PYTHON_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_QUIET)
set(_missing "")
if(NOT STARLING_TORCH_INCLUDE)
  list(APPEND _missing "torch headers (libtorch-dev)")
endif()
if(NOT STARLING_PYBIND11_INCLUDE)
  list(APPEND _missing "pybind11 headers (pybind11-dev)")
endif()
if(NOT EXISTS "${STARLING_PYTHON_INCLUDE}/Python.h")
  list(APPEND _missing "Python headers (python3-dev)")
endif()
foreach(lib torch torch_cpu c10 torch_python)
  find_library(STARLING_LIB_${lib} ${lib} PATHS /usr/lib/x86_64-linux-gnu)
  if(STARLING_LIB_${lib})
    list(APPEND STARLING_TORCH_LIBS ${STARLING_LIB_${lib}})
  else()
    list(APPEND _missing "lib${lib}.so")
  endif()
endforeach()

if(_missing)
  if(STARLING_TORCH STREQUAL "ON")
    message(FATAL_ERROR "STARLING_TORCH=ON but missing: ${_missing}")
  endif()
  message(STATUS "torch.distributed backend not built; missing: ${_missing}")
  return()
endif()
message(STATUS "torch.distributed backend: building python/csrc")
set(STARLING_TORCH_BUILT ON)
add_subdirectory(python/csrc)
