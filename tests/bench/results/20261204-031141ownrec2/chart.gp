set terminal pngcairo size 1400,1000 font "sans,10"
set output "/work/main/tests/bench/results/20261204-031141ownrec2/chart.png"
set multiplot layout 2,2 title "Outrigger L4 benchmark 20261204-031141ownrec2 (full)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top right
set termoption noenhanced
set grid ytics
set datafile missing "?"
set xtics nomirror
set yrange [0:*]
set title "Throughput at saturation / direct"
set ylabel "ratio to direct"
unset logscale y; set yrange [0:*]
set label 1 "no data" at graph 0.5,0.5 center; plot [0:1] [0:1] 2 with lines notitle; unset label 1
set title "Ping-pong latency, open loop (µs)"
set ylabel "µs (log)"
unset logscale y; set yrange [0:*]
set label 1 "no data" at graph 0.5,0.5 center; plot [0:1] [0:1] 2 with lines notitle; unset label 1
set title "Proxy CPU-ms per 1,000 ops at 1000/s"
set ylabel "CPU-ms"
unset logscale y; set yrange [0:*]
set label 1 "no data" at graph 0.5,0.5 center; plot [0:1] [0:1] 2 with lines notitle; unset label 1
set title "RSS per sidecar (MiB)"
set ylabel "MiB"
unset logscale y; set yrange [0:*]
plot '/work/main/tests/bench/results/20261204-031141ownrec2/chart4.dat' using 2:xtic(1) title columnheader(2) lc rgb '#2ca02c', '/work/main/tests/bench/results/20261204-031141ownrec2/chart4.dat' using 3:xtic(1) title columnheader(3) lc rgb '#1f77b4'
unset multiplot
