-- wrk script for bench/run.sh: POST a JSON body read from a file, report a JSON line.
--
--   wrk -t1 -c1 -d10s --latency -s bench/wrk/infer.lua URL -- body.json
--   BODY_FILE=body.json wrk ... -s bench/wrk/infer.lua URL
--
-- done() prints one line starting with "WRK_JSON " followed by a JSON object:
--   requests, duration_s, rps, bytes, latency_us {min,mean,stdev,max,p50,p90,p99,p999},
--   errors {connect,read,write,status,timeout} (status = non-2xx/3xx responses).

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    io.stderr:write("infer.lua: cannot open body file '" .. tostring(path) .. "': " .. tostring(err) .. "\n")
    os.exit(2)
  end
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local path = args[1] or os.getenv("BODY_FILE")
  if not path or path == "" then
    io.stderr:write("infer.lua: give the body file as `-- body.json` or BODY_FILE=...\n")
    os.exit(2)
  end
  wrk.method = "POST"
  wrk.body = read_file(path)
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local dur_s = summary.duration / 1e6
  local e = summary.errors
  local function num(x) return string.format("%.3f", x) end
  local parts = {
    '"requests":' .. summary.requests,
    '"duration_s":' .. num(dur_s),
    '"rps":' .. num(dur_s > 0 and summary.requests / dur_s or 0),
    '"bytes":' .. summary.bytes,
    '"latency_us":{' ..
      '"min":' .. num(latency.min) ..
      ',"mean":' .. num(latency.mean) ..
      ',"stdev":' .. num(latency.stdev) ..
      ',"max":' .. num(latency.max) ..
      ',"p50":' .. num(latency:percentile(50)) ..
      ',"p90":' .. num(latency:percentile(90)) ..
      ',"p99":' .. num(latency:percentile(99)) ..
      ',"p999":' .. num(latency:percentile(99.9)) .. '}',
    '"errors":{"connect":' .. e.connect .. ',"read":' .. e.read .. ',"write":' .. e.write ..
      ',"status":' .. e.status .. ',"timeout":' .. e.timeout .. '}',
  }
  io.write("WRK_JSON {" .. table.concat(parts, ",") .. "}\n")
end
