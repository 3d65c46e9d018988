// module.cpp -- the Python extension _starling_c10d: ProcessGroupStarling for
// torch.distributed, and the translation of starling_torch::Error into the exception
// classes of starling.errors (PeerLost, Timeout, ...). Loaded by starling.distributed,
// which registers the "starling" backend.
#include "process_group.hpp"

#include <starling.h>

#include <torch/extension.h>

namespace py = pybind11;
using starling_torch::Error;
using starling_torch::StarlingOptions;
using starling_torch::ProcessGroupStarling;

namespace {

// starling.errors.error_for, kept for the life of the process: the translator may run
// during interpreter shutdown, after module objects have been cleared.
py::object *error_for = nullptr;

void translate(std::exception_ptr p) {
    try {
        if (p)
            std::rethrow_exception(p);
    } catch (const Error &e) {
        py::object exc = (*error_for)(e.code(), e.what());
        PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(exc.ptr())), exc.ptr());
    }
}

} // namespace

PYBIND11_MODULE(_starling_c10d, m) {
    m.doc() = "torch.distributed ProcessGroup over libstarling (see starling.distributed)";
    py::module_::import("torch.distributed");
    error_for = new py::object(py::module_::import("starling.errors").attr("error_for"));
    py::register_exception_translator(&translate);

    py::class_<ProcessGroupStarling, c10d::ProcessGroup,
               c10::intrusive_ptr<ProcessGroupStarling>>(m, "ProcessGroupStarling",
                                                         py::dynamic_attr())
        .def(py::init([](int rank, int size, const std::string &coordinator,
                         const std::string &run, const py::bytes &secret,
                         const std::string &name, int timeout_ms, int op_timeout_ms,
                         int streams, bool root_fallback, const std::string &listen,
                         const std::string &advertise, const std::string &security,
                         int inbound, int shm) {
                 StarlingOptions o;
                 o.coordinator = coordinator;
                 o.run = run;
                 o.secret = secret;
                 o.name = name;
                 o.timeout_ms = timeout_ms;
                 o.op_timeout_ms = op_timeout_ms;
                 o.streams = streams;
                 o.root_fallback = root_fallback;
                 o.listen = listen;
                 o.advertise = advertise;
                 o.security = security;
                 o.inbound = inbound;
                 o.shm = shm;
                 py::gil_scoped_release nogil;
                 return c10::make_intrusive<ProcessGroupStarling>(rank, size, o);
             }),
             py::arg("rank"), py::arg("size"), py::arg("coordinator"), py::arg("run"),
             py::arg("secret"), py::arg("name") = "", py::arg("timeout_ms") = 0,
             py::arg("op_timeout_ms") = 0, py::arg("streams") = 0,
             py::arg("root_fallback") = false, py::arg("listen") = "",
             py::arg("advertise") = "", py::arg("security") = "", py::arg("inbound") = -1,
             py::arg("shm") = -1)
        .def("update_topology", &ProcessGroupStarling::updateTopology,
             py::call_guard<py::gil_scoped_release>(),
             "Applies membership changes (after PeerLost) and rebuilds the rank map.")
        .def("drain", &ProcessGroupStarling::drain, py::call_guard<py::gil_scoped_release>(),
             "Waits until every collective issued so far has completed.")
        .def_property_readonly("live_size", &ProcessGroupStarling::liveSize,
                               py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("live_rank", &ProcessGroupStarling::liveRank,
                               py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("live_ranks", &ProcessGroupStarling::liveRanks,
                               py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("epoch", &ProcessGroupStarling::epoch,
                               py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("bytes_sent", &ProcessGroupStarling::bytesSent,
                               py::call_guard<py::gil_scoped_release>())
        .def_property("root_fallback", &ProcessGroupStarling::rootFallback,
                      &ProcessGroupStarling::setRootFallback,
                      "Broadcast from a rank that has left: from a live member instead of "
                      "raising PeerLost (for replicas known to be equal).")
        .def_property_readonly("_comm_handle", &ProcessGroupStarling::commHandle);
}
